{{/* Prefix of the release-wide objects this chart creates: <release>-schemashift. */}}
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

{{/*
Hook annotations: include with (list "<events>" "<weight>" "<delete policy>"). Argo CD reads the
same annotations: pre-* is PreSync, post-* is PostSync, the weight is the sync wave and the delete
policies map one to one (docs/argocd.md).
*/}}
{{- define "schemashift-hook.hook" -}}
helm.sh/hook: {{ index . 0 }}
helm.sh/hook-weight: {{ index . 1 | quote }}
helm.sh/hook-delete-policy: {{ index . 2 }}
{{- end }}

{{/* The Helm hook events of a phase: expand before the release's resources, contract after. */}}
{{- define "schemashift-hook.events" -}}
{{- if eq . "expand" }}pre-install,pre-upgrade{{ else }}post-install,post-upgrade{{ end }}
{{- end }}

{{/* Objects every phase needs (database Secret, runner ServiceAccount) are made before the
expand; they are kept for the contract, which runs after the release's resources. */}}
{{- define "schemashift-hook.sharedDeletePolicy" -}}
{{- if .Values.contract.enabled }}before-hook-creation{{ else }}before-hook-creation,hook-succeeded{{ end }}
{{- end }}

{{/*
The release content's short hash: the SchemaMigration spec as rendered (image, target, script
location, database, options). Names come from it, never from .Release.Revision, which Argo CD's
`helm template` always renders as 1: a new release content gets new names, the same content the
same names.
*/}}
{{- define "schemashift-hook.contentHash" -}}
{{- include "schemashift-hook.spec" . | fromYaml | toJson | sha256sum | trunc 8 }}
{{- end }}

{{/* <release>-<content hash>, or migration.name; the phases append -expand / -contract. */}}
{{- define "schemashift-hook.baseName" -}}
{{- if .Values.migration.name }}
{{- tpl .Values.migration.name . | trunc 49 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" (.Release.Name | trunc 40 | trimSuffix "-") (include "schemashift-hook.contentHash" .) }}
{{- end }}
{{- end }}

{{/* include with (dict "root" $ "phase" "expand"|"contract") */}}
{{- define "schemashift-hook.migrationName" -}}
{{- printf "%s-%s" (include "schemashift-hook.baseName" .root) .phase }}
{{- end }}

{{- define "schemashift-hook.waiterName" -}}
{{- printf "%s-wait" (include "schemashift-hook.migrationName" .) }}
{{- end }}

{{- define "schemashift-hook.dbSecretName" -}}
{{- printf "%s-db" (include "schemashift-hook.fullname" .) }}
{{- end }}

{{- define "schemashift-hook.runnerName" -}}
{{- printf "%s-runner" (include "schemashift-hook.fullname" .) }}
{{- end }}

{{/*
The SchemaMigration spec without its phase: the user's spec rendered with tpl, then what this
chart provides (the hook-created database Secret, the runner's ServiceAccount) filled in.
*/}}
{{- define "schemashift-hook.spec" -}}
{{- $spec := fromYaml (tpl (toYaml .Values.migration.spec) .) }}
{{- if hasKey $spec "phase" }}
{{- fail "migration.spec.phase is set by this chart: expand before the release's resources, contract after them. Remove it; set contract.enabled=false to run the expand phase only" }}
{{- end }}
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

{{/* True (non-empty) when rendering against a cluster: `lookup` answers nothing under
`helm template`, and so under Argo CD. Every namespace has ServiceAccount "default". */}}
{{- define "schemashift-hook.againstCluster" -}}
{{- if lookup "v1" "ServiceAccount" .Release.Namespace "default" }}true{{ end }}
{{- end }}

{{/*
A SchemaMigration of this name from an earlier attempt that is still running (e.g. after Helm's
--timeout ran out): it is not replaced (before-hook-creation would stop it mid-run); the waiter
waits for it instead. Only Helm against a cluster can see it.
*/}}
{{- define "schemashift-hook.stillRunning" -}}
{{- if and .root.Values.migration.resumeRunning (include "schemashift-hook.againstCluster" .root) }}
{{- $found := lookup "schemashift.io/v1alpha1" "SchemaMigration" .root.Release.Namespace (include "schemashift-hook.migrationName" .) }}
{{- if and $found (not (has (dig "status" "phase" "" $found) (list "Succeeded" "Failed" "RolledBack"))) }}true{{ end }}
{{- end }}
{{- end }}
