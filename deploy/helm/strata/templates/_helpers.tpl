{{/* Names: <release>-strata unless the release is already called that. */}}
{{- define "strata.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "strata.headless" -}}
{{- printf "%s-headless" (include "strata.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "strata.etcdName" -}}
{{- printf "%s-etcd" (include "strata.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "strata.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "strata.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{ include "strata.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "strata.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "strata.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The etcd the brokers use: an existing one, the trial StatefulSet, or none (embedded). */}}
{{- define "strata.etcdUrl" -}}
{{- if .Values.etcd.endpoints -}}
{{- .Values.etcd.endpoints -}}
{{- else if .Values.etcd.trial.enabled -}}
{{- printf "http://%s.%s.svc.%s:2379" (include "strata.etcdName" .) .Release.Namespace .Values.clusterDomain -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the S3 credentials, if any. */}}
{{- define "strata.s3Secret" -}}
{{- if .Values.objectStore.credentials.existingSecret -}}
{{- .Values.objectStore.credentials.existingSecret -}}
{{- else if .Values.objectStore.credentials.accessKeyId -}}
{{- printf "%s-s3" (include "strata.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Refuse values that cannot work, at render time rather than in a crash loop. */}}
{{- define "strata.validate" -}}
{{- $etcd := include "strata.etcdUrl" . -}}
{{- if and (not $etcd) (or (gt (int .Values.replicas) 1) .Values.autoscaling.enabled) -}}
{{- fail "more than one broker needs cluster mode: set etcd.endpoints or etcd.trial.enabled" -}}
{{- end -}}
{{- if and $etcd (not (hasPrefix "s3://" .Values.objectStore.url)) -}}
{{- fail "cluster mode needs a shared bucket: set objectStore.url to s3://bucket[/prefix]" -}}
{{- end -}}
{{- if not (has .Values.durability (list "wal" "object")) -}}
{{- fail "durability must be wal or object" -}}
{{- end -}}
{{- if and .Values.objectStore.credentials.accessKeyId (not .Values.objectStore.credentials.secretAccessKey) -}}
{{- fail "objectStore.credentials: accessKeyId without secretAccessKey" -}}
{{- end -}}
{{- $reserved := list "broker_id" "data_dir" "listen" "advertised_listener" "metrics_listen" "etcd" "cluster_name" "object_store" "s3_endpoint" "s3_region" "s3_addressing_style" "durability" "config" -}}
{{- range $key, $_ := .Values.config -}}
{{- if has $key $reserved -}}
{{- fail (printf "config.%s: the chart sets it (see values.yaml for its own value)" $key) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A setting as the broker reads it: whole numbers without an exponent (values.yaml
numbers arrive as floats), booleans as true/false. */}}
{{- define "strata.settingValue" -}}
{{- if and (kindIs "float64" .) (eq (float64 (int64 .)) .) -}}
{{- printf "%d" (int64 .) -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}
