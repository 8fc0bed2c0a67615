{{/* Names, labels and the cluster arithmetic shared by the templates. */}}

{{- define "settle.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Pod host names are <fullname>-<ordinal>; keep room for the ordinal and the controller hash. */}}
{{- define "settle.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "settle.peerService" -}}{{ include "settle.fullname" . }}-peers{{- end -}}
{{- define "settle.tlsSecret" -}}{{ default (printf "%s-tls" (include "settle.fullname" .)) .Values.tls.existingSecret }}{{- end -}}
{{- define "settle.authSecret" -}}{{ default (printf "%s-auth" (include "settle.fullname" .)) .Values.auth.existingSecret }}{{- end -}}

{{- define "settle.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "settle.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "settle.selectorLabels" -}}
app.kubernetes.io/name: {{ include "settle.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "settle.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "settle.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: settle
{{- end -}}

{{- define "settle.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{/* Members that bootstrap together: cluster.initialMembers, or replicaCount. */}}
{{- define "settle.initialMembers" -}}
{{- $n := int (default .Values.replicaCount .Values.cluster.initialMembers) -}}
{{- $n -}}
{{- end -}}

{{/* The largest number of pods that may be down while every shard keeps a majority of its
     cluster.replicas replicas: a shard of R replicas survives floor((R-1)/2) losses, and any
     pod may hold a replica of any shard. */}}
{{- define "settle.quorumSafeUnavailable" -}}
{{- div (sub (int .Values.cluster.replicas) 1) 2 -}}
{{- end -}}

{{/* Refuses value combinations that would make the cluster unsafe or unable to start. */}}
{{- define "settle.validate" -}}
{{- $r := int .Values.cluster.replicas -}}
{{- $n := int .Values.replicaCount -}}
{{- $init := int (include "settle.initialMembers" .) -}}
{{- if lt $r 1 -}}{{- fail "cluster.replicas must be at least 1" -}}{{- end -}}
{{- if eq (mod $r 2) 0 -}}{{- fail (printf "cluster.replicas=%d: use an odd replication factor (an even one tolerates no more failures than the odd one below it)" $r) -}}{{- end -}}
{{- if lt $n $r -}}{{- fail (printf "replicaCount=%d is below cluster.replicas=%d: every shard needs %d distinct nodes" $n $r $r) -}}{{- end -}}
{{- if lt $init $r -}}{{- fail (printf "cluster.initialMembers=%d is below cluster.replicas=%d" $init $r) -}}{{- end -}}
{{- if lt (int .Values.cluster.shards) 1 -}}{{- fail "cluster.shards must be at least 1" -}}{{- end -}}
{{- if and .Values.podDisruptionBudget.enabled (not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) -}}
{{- $safe := int (include "settle.quorumSafeUnavailable" .) -}}
{{- $want := int .Values.podDisruptionBudget.maxUnavailable -}}
{{- if gt $want $safe -}}{{- fail (printf "podDisruptionBudget.maxUnavailable=%d would let a shard of %d replicas lose its majority (at most %d)" $want $r $safe) -}}{{- end -}}
{{- if lt $want 1 -}}{{- fail "podDisruptionBudget.maxUnavailable must be at least 1 (0 blocks node drains forever)" -}}{{- end -}}
{{- end -}}
{{- if and .Values.drain.enabled (ge (int .Values.drain.timeoutSeconds) (int .Values.terminationGracePeriodSeconds)) -}}
{{- fail (printf "drain.timeoutSeconds=%d must be below terminationGracePeriodSeconds=%d (the node needs time for its own graceful shutdown)" (int .Values.drain.timeoutSeconds) (int .Values.terminationGracePeriodSeconds)) -}}
{{- end -}}
{{- if and .Values.drain.enabled (not .Values.rbac.create) -}}
{{- fail "drain.enabled needs rbac.create (the preStop hook reads the StatefulSet's replica count)" -}}
{{- end -}}
{{- if not (has .Values.scheduling.podAntiAffinity (list "hard" "soft")) -}}
{{- fail "scheduling.podAntiAffinity must be hard or soft" -}}
{{- end -}}
{{- end -}}
