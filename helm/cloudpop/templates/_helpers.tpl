{{/* Names, labels and shared pieces of the cloudpop chart. */}}

{{- define "cloudpop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name, at most 55 characters: objects append up to 8 ("-metrics"). */}}
{{- define "cloudpop.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 55 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 55 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 55 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "cloudpop.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "cloudpop.labels" -}}
helm.sh/chart: {{ include "cloudpop.chart" . }}
{{ include "cloudpop.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cloudpop
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "cloudpop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cloudpop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Call with (dict "root" $ "component" "pop3"). */}}
{{- define "cloudpop.componentLabels" -}}
{{ include "cloudpop.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "cloudpop.componentSelectorLabels" -}}
{{ include "cloudpop.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "cloudpop.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "cloudpop.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "cloudpop.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) -}}
{{- end -}}

{{/* Ports inside the pods: the listen addresses are 0.0.0.0:PORT. */}}
{{- define "cloudpop.port.pop3" -}}1110{{- end -}}
{{- define "cloudpop.port.pop3s" -}}1995{{- end -}}
{{- define "cloudpop.port.lmtp" -}}2424{{- end -}}
{{- define "cloudpop.port.grpc" -}}50051{{- end -}}
{{- define "cloudpop.port.admin" -}}9090{{- end -}}

{{/* Where the chart mounts files. */}}
{{- define "cloudpop.path.config" -}}/etc/cloudpop/cloudpop.toml{{- end -}}
{{- define "cloudpop.path.dataDir" -}}/var/lib/cloudpop{{- end -}}
{{- define "cloudpop.path.tls" -}}/etc/cloudpop/tls{{- end -}}
{{- define "cloudpop.path.tlsSni" -}}/etc/cloudpop/tls-sni{{- end -}}
{{- define "cloudpop.path.s3" -}}/etc/cloudpop/s3{{- end -}}
{{- define "cloudpop.path.directory" -}}/etc/cloudpop/directory{{- end -}}
{{- define "cloudpop.path.jwks" -}}/etc/cloudpop/jwks{{- end -}}

{{/* Secrets in effect: an existing one, or the chart's own made from inline values, or "". */}}
{{- define "cloudpop.tlsSecret" -}}
{{- if .Values.tls.existingSecret -}}
{{- .Values.tls.existingSecret -}}
{{- else if and .Values.tls.cert .Values.tls.key -}}
{{- printf "%s-tls" (include "cloudpop.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "cloudpop.s3Secret" -}}
{{- if .Values.s3.existingSecret -}}
{{- .Values.s3.existingSecret -}}
{{- else if and .Values.s3.accessKeyId .Values.s3.secretAccessKey -}}
{{- printf "%s-s3" (include "cloudpop.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "cloudpop.directorySecret" -}}
{{- if .Values.auth.directory.existingSecret -}}
{{- .Values.auth.directory.existingSecret -}}
{{- else if .Values.auth.directory.files -}}
{{- printf "%s-directory" (include "cloudpop.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The auth service's address for the pop3 and lmtp pods. */}}
{{- define "cloudpop.authEndpoint" -}}
{{- printf "http://%s-auth:%v" (include "cloudpop.fullname" .) .Values.auth.service.port -}}
{{- end -}}

{{/* One TOML value from a string, number, boolean or list (JSON's forms are TOML's here). */}}
{{- define "cloudpop.toml" -}}
{{- if kindIs "float64" . -}}
{{- if eq (floor .) . -}}{{- printf "%d" (int64 .) -}}{{- else -}}{{- toJson . -}}{{- end -}}
{{- else -}}
{{- toJson . -}}
{{- end -}}
{{- end -}}

{{/* `key = value` lines of a map, sorted by key. */}}
{{- define "cloudpop.tomlKeys" -}}
{{- $lines := list -}}
{{- range $key := keys . | sortAlpha -}}
{{- $lines = append $lines (printf "%s = %s" $key (include "cloudpop.toml" (index $ $key))) -}}
{{- end -}}
{{- join "\n" $lines -}}
{{- end -}}

{{/*
Drain timing of a component, from the global `drain` and the component's overrides.
Call with (dict "root" $ "component" "pop3"); returns JSON with preStop, grace, total.
*/}}
{{- define "cloudpop.drain" -}}
{{- $d := merge (deepCopy (index .root.Values .component "drain")) (deepCopy .root.Values.drain) -}}
{{- $preStop := int $d.preStopSleepSeconds -}}
{{- $grace := int $d.gracePeriodSeconds -}}
{{- $margin := int $d.marginSeconds -}}
{{- dict "preStop" $preStop "grace" $grace "total" (add $preStop $grace $margin) | toJson -}}
{{- end -}}

{{/* The port the pods reach S3 on: networkPolicy.egress.s3.ports, else from s3.endpoint. */}}
{{- define "cloudpop.s3Ports" -}}
{{- $ports := .Values.networkPolicy.egress.s3.ports -}}
{{- if not $ports -}}
{{- $port := 443 -}}
{{- with .Values.s3.endpoint -}}
{{- $url := urlParse . -}}
{{- $hostPort := splitList ":" $url.host -}}
{{- if gt (len $hostPort) 1 -}}
{{- $port = last $hostPort | int -}}
{{- else if eq $url.scheme "http" -}}
{{- $port = 80 -}}
{{- end -}}
{{- end -}}
{{- $ports = list $port -}}
{{- end -}}
{{- toJson $ports -}}
{{- end -}}
