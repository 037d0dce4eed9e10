{{/* Prefix of every object this chart creates: <release>-schemashift (63 characters at most). */}}
{{- define "schemashift-hook.fullname" -}}
{{- printf "%s-schemashift" .Release.Name | trunc 52 | trimSuffix "-" }}
{{- end }}

{{- define "schemashift-hook.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: schemashift-hook
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: schemashift
{{- end }}

{{/* Hook annotations: include with (list "<weight>" "<delete policy>"). */}}
{{- define "schemashift-hook.hook" -}}
helm.sh/hook: pre-install,pre-upgrade
helm.sh/hook-weight: {{ index . 0 | quote }}
helm.sh/hook-delete-policy: {{ index . 1 }}
{{- end }}

{{- define "schemashift-hook.migrationName" -}}
{{- if .Values.migration.name }}
{{- tpl .Values.migration.name . | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-r%d" (.Release.Name | trunc 50 | trimSuffix "-") (int .Release.Revision) }}
{{- end }}
{{- end }}

{{- define "schemashift-hook.dbSecretName" -}}
{{- printf "%s-db" (include "schemashift-hook.fullname" .) }}
{{- end }}

{{- define "schemashift-hook.runnerName" -}}
{{- printf "%s-runner" (include "schemashift-hook.fullname" .) }}
{{- end }}

{{- define "schemashift-hook.waiterName" -}}
{{- printf "%s-wait" (include "schemashift-hook.fullname" .) }}
{{- end }}

{{/*
The SchemaMigration spec: the user's spec rendered with tpl, then what this chart provides
(the hook-created database Secret, the runner's ServiceAccount) filled in.
*/}}
{{- define "schemashift-hook.spec" -}}
{{- $spec := fromYaml (tpl (toYaml .Values.migration.spec) .) }}
{{- if .Values.secrets.database.create }}
{{- $_ := set $spec "database" (dict "urlSecretRef" (dict "name" (include "schemashift-hook.dbSecretName" .) "key" "url")) }}
{{- end }}
{{- if .Values.runner.create }}
{{- $job := default (dict) $spec.job }}
{{- if not $job.serviceAccountName }}
{{- $_ := set $job "serviceAccountName" (include "schemashift-hook.runnerName" .) }}
{{- end }}
{{- $_ := set $spec "job" $job }}
{{- end }}
{{- toYaml $spec }}
{{- end }}

{{/* Seconds the waiter waits: waiter.timeout, else spec.deadlineSeconds + 5 minutes. */}}
{{- define "schemashift-hook.waitSeconds" -}}
{{- $deadline := int (default 1800 .Values.migration.spec.deadlineSeconds) }}
{{- if .Values.waiter.timeout }}
{{- include "schemashift-hook.durationSeconds" .Values.waiter.timeout }}
{{- else }}
{{- add $deadline 300 }}
{{- end }}
{{- end }}

{{- define "schemashift-hook.waiterImage" -}}
{{- $img := .Values.waiter.image }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}
