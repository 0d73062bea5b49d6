{{/* The apps: values key -> Dapr app id. */}}
{{- define "twinfleet.apps" -}}
twinStore: twin-store
delta: delta
events: events
commands: commands
rollout: rollout
firmware: firmware
{{- end -}}

{{/* The apps holding their own broker session, keyed by the pod's name: StatefulSets, so a
restarted pod resumes its session (and what the broker queued for it). */}}
{{- define "twinfleet.kind" -}}
{{- if has . (list "twin-store" "delta") }}StatefulSet{{ else }}Deployment{{ end -}}
{{- end -}}

{{/* The apps that call others with their own identity (client credentials). */}}
{{- define "twinfleet.callsOthers" -}}
{{- has . (list "rollout" "delta" "firmware" "commands" "events") -}}
{{- end -}}

{{/* The Secrets holding the sidecars' API token and one app's token (key `token` each). */}}
{{- define "twinfleet.apiTokenSecret" -}}
{{- printf "%s-dapr-api-token" (.Release.Name | trunc 40 | trimSuffix "-") -}}
{{- end -}}

{{- define "twinfleet.appTokenSecret" -}}
{{- printf "%s-app-token" (include "twinfleet.name" .) -}}
{{- end -}}

{{/* The apps that run several replicas (all but rollout, the single planner). */}}
{{- define "twinfleet.scalable" -}}
{{- ne . "rollout" -}}
{{- end -}}

{{/* An app's object names: <release>-<app id>; (list $ "twin-store"). */}}
{{- define "twinfleet.name" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" ($root.Release.Name | trunc 40 | trimSuffix "-") (index . 1) -}}
{{- end -}}

{{- define "twinfleet.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ index . 1 }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
{{- end -}}

{{- define "twinfleet.labels" -}}
{{- $root := index . 0 -}}
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: twinfleet
app.kubernetes.io/component: {{ index . 1 }}
{{ include "twinfleet.selectorLabels" . }}
{{- end -}}

{{/* The labels every pod of the release carries (the network policies select them). */}}
{{- define "twinfleet.releasePods" -}}
app.kubernetes.io/part-of: twinfleet
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "twinfleet.image" -}}
{{- $image := .Values.global.image -}}
{{- $name := printf "%s:%s" $image.repository ($image.tag | default .Chart.AppVersion) -}}
{{- if $image.registry }}{{ printf "%s/%s" ($image.registry | trimSuffix "/") $name }}{{ else }}{{ $name }}{{ end -}}
{{- end -}}

{{/* Does the app read key material from Kubernetes Secrets (through its sidecar)? */}}
{{- define "twinfleet.readsSecrets" -}}
{{- $root := index . 0 -}}
{{- and (eq $root.Values.global.backing.secrets.type "kubernetes") (has (index . 1) (list "twin-store" "delta" "firmware")) -}}
{{- end -}}

{{/* Which Secrets (by name) an app reads from the Kubernetes secret store. */}}
{{- define "twinfleet.keyMaterial" -}}
{{- if eq . "firmware" -}}
[tuf-snapshot-key, tuf-timestamp-key, artifact-store-key, download-url-key, fleet-secret]
{{- else -}}
[device-broker-url]
{{- end -}}
{{- end -}}

{{/* The binding metadata key naming an object, per artifacts/events backing type. */}}
{{- define "twinfleet.nameKey" -}}
{{- get (dict "local" "fileName" "blob" "blobName" "s3" "key") . -}}
{{- end -}}

{{/* An app's volume on local storage (events sink, artifacts): (list $ "events") -> "" or the backing. */}}
{{- define "twinfleet.localStore" -}}
{{- $root := index . 0 -}}
{{- $store := get (dict "events" "events" "firmware" "artifacts") (index . 1) -}}
{{- if and $store (eq (get $root.Values.global.backing $store).type "local") }}{{ $store }}{{ end -}}
{{- end -}}
