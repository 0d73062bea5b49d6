/* A Mosquitto 2.0 plugin: the AWS IoT Device SDK v2 appends `?SDK=<name>&Version=<v>` to the MQTT
 * username (AWS IoT strips it, as its metrics channel). This plugin strips everything from the
 * first `?` before the broker checks the password file and the ACL, so such a device logs in with
 * its plain device id as username. It decides nothing itself: it returns MOSQ_ERR_PLUGIN_DEFER, and
 * the password file (and the ACL's %u patterns) see the stripped name.
 *
 * Build: scripts/build-broker-plugin.sh (gcc -shared -fPIC; headers from Debian's mosquitto-dev)
 * Use:   plugin /path/strip_sdk_suffix.so   (before password_file / acl_file in mosquitto.conf)
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

static mosquitto_plugin_id_t *plugin_id = NULL;

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *auth = event_data;
	const char *suffix;
	char *plain;
	(void)event;
	(void)userdata;

	if(auth->username == NULL) return MOSQ_ERR_PLUGIN_DEFER;
	suffix = strchr(auth->username, '?');
	if(suffix == NULL || suffix == auth->username) return MOSQ_ERR_PLUGIN_DEFER;
	plain = strndup(auth->username, (size_t)(suffix - auth->username));
	if(plain == NULL) return MOSQ_ERR_NOMEM;
	if(mosquitto_set_username(auth->client, plain) != MOSQ_ERR_SUCCESS){
		free(plain);
		return MOSQ_ERR_AUTH;
	}
	free(plain);
	/* The event's username still points at the old, freed string: the checks after this one read
	 * the client's (now stripped) username. */
	auth->username = (char *)mosquitto_client_username(auth->client);
	return MOSQ_ERR_PLUGIN_DEFER;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for(int i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata, struct mosquitto_opt *opts, int opt_count)
{
	(void)userdata;
	(void)opts;
	(void)opt_count;
	plugin_id = identifier;
	return mosquitto_callback_register(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL);
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *opts, int opt_count)
{
	(void)userdata;
	(void)opts;
	(void)opt_count;
	return mosquitto_callback_unregister(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
}
