{{/* The release's base name (every object is named after it). */}}
{{- define "device-agent.fullname" -}}
{{- .Release.Name | trunc 54 | trimSuffix "-" -}}
{{- end -}}

{{- define "device-agent.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: twinfleet
{{ include "device-agent.selectorLabels" . }}
{{- end -}}

{{- define "device-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The device id; rendering fails without it. */}}
{{- define "device-agent.deviceId" -}}
{{- required "device.id is required: the id of the device this agent runs for (--set device.id=...)" .Values.device.id -}}
{{- end -}}

{{/* The Secret with the broker URL (key `url`) carrying the device's credentials. */}}
{{- define "device-agent.credentialsSecret" -}}
{{- .Values.device.credentialsSecret | default (printf "%s-broker" (include "device-agent.fullname" .)) -}}
{{- end -}}

{{/* The ConfigMap the agent writes the desired settings into. */}}
{{- define "device-agent.configMap" -}}
{{- .Values.configMap.name | default (printf "%s-settings" (include "device-agent.fullname" .)) -}}
{{- end -}}
