{{/* The chart's name, cut to the 63 characters Kubernetes names allow. */}}
{{- define "ccrelay.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's resource name prefix. */}}
{{- define "ccrelay.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ccrelay.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ccrelay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ccrelay.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ccrelay.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
ccrelay's config file: the chart's own fields (addresses, data dir, rules path) and the
user's `config`. Rendered as JSON, which ccrelay's YAML reader takes as is, because Helm holds
numbers from values files as floats and its YAML output would write 10 GiB as 1.073741824e+10;
JSON keeps it an integer.
*/}}
{{- define "ccrelay.config" -}}
{{- $config := dict "version" 1 "listen" (printf "0.0.0.0:%d" (int .Values.ports.ingress)) "admin_listen" (printf "0.0.0.0:%d" (int .Values.ports.admin)) "data_dir" "/data" "sources" .Values.config.sources }}
{{- if .Values.rules }}
{{- $_ := set $config "rules" "/etc/ccrelay/rules/rules.yaml" }}
{{- end }}
{{- with .Values.config.ingress }}
{{- $_ := set $config "ingress" . }}
{{- end }}
{{- with .Values.config.spool }}
{{- $_ := set $config "spool" . }}
{{- end }}
{{- toPrettyJson $config }}
{{- end }}
