{{/* Names and labels. */}}
{{- define "vodfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vodfleet.fullname" -}}
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

{{- define "vodfleet.coordinator" -}}
{{- printf "%s-coordinator" (include "vodfleet.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vodfleet.worker" -}}
{{- printf "%s-worker" (include "vodfleet.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vodfleet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "vodfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: vodfleet
{{- end }}

{{/* Selector labels of one component: (dict "ctx" $ "component" "worker"). */}}
{{- define "vodfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vodfleet.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "vodfleet.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "vodfleet.secretName" -}}
{{- default (printf "%s-secrets" (include "vodfleet.fullname" .)) .Values.secrets.existingSecret }}
{{- end }}

{{- define "vodfleet.workerServiceAccount" -}}
{{- if .Values.worker.serviceAccount.create }}
{{- default (include "vodfleet.worker" .) .Values.worker.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.worker.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Slots a worker pod is counted for when scaling. */}}
{{- define "vodfleet.slotsPerPod" -}}
{{- if gt (int .Values.autoscaling.slotsPerPod) 0 }}{{ int .Values.autoscaling.slotsPerPod }}{{ else }}{{ int .Values.worker.slots }}{{ end }}
{{- end }}

{{/* Label matchers for the coordinators' series in autoscaling queries. */}}
{{- define "vodfleet.kedaSelector" -}}
{{- default (printf "namespace=%q" .Release.Namespace) .Values.autoscaling.keda.labelSelector }}
{{- end }}

{{/*
Demand with headroom: tasks streaming plus tasks waiting for a worker, as the
coordinators count them in Redis (every replica reports the same totals: max,
not sum), times (100 + headroom) / 100.
*/}}
{{- define "vodfleet.demandQuery" -}}
{{- $sel := include "vodfleet.kedaSelector" . -}}
ceil(max(sum without (state) (vodfleet_tasks{state=~"running|leased",{{ $sel }}})) * {{ add 100 (int .Values.autoscaling.headroomPercent) }} / 100)
{{- end }}

{{/* The env var a secret key feeds; optional keys may be absent. */}}
{{- define "vodfleet.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "vodfleet.secretName" .ctx }}
      key: {{ .key }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end }}

{{/* The env both processes share. */}}
{{- define "vodfleet.commonEnv" -}}
{{ include "vodfleet.secretEnv" (dict "ctx" . "name" "VODFLEET_AMQP_URL" "key" "amqp-url") }}
- name: VODFLEET_LEASE_TTL_MS
  value: {{ .Values.common.leaseTtlMs | int64 | quote }}
- name: VODFLEET_HEARTBEAT_MS
  value: {{ .Values.common.heartbeatMs | int64 | quote }}
- name: VODFLEET_ALLOW_PRIVATE_NETWORKS
  value: {{ .Values.common.allowPrivateNetworks | quote }}
- name: VODFLEET_RETRY_BACKOFF_MS
  value: {{ .Values.common.retryBackoffMs | int64 | quote }}
- name: VODFLEET_LOG
  value: {{ .Values.common.log | quote }}
{{- end }}
