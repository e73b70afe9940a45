{{/* Names and labels shared by the chart's templates. */}}

{{- define "switchpoint.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "switchpoint.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "switchpoint.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "switchpoint.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "switchpoint.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: switchpoint
{{- end }}

{{- define "switchpoint.operatorSelector" -}}
app.kubernetes.io/name: {{ include "switchpoint.name" . }}-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "switchpoint.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "switchpoint.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "switchpoint.redisUrl" -}}
{{- if .Values.redis.url }}
{{- .Values.redis.url }}
{{- else if .Values.redis.bundled.enabled }}
{{- printf "redis://%s-redis.%s.svc:6379/0" (include "switchpoint.fullname" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{- /* The Secret holding the routers' shared settle key: "name key", or "" when there is none. */}}
{{- define "switchpoint.settleKeySecret" -}}
{{- if .Values.settleKey.existingSecret.name }}
{{- printf "%s %s" .Values.settleKey.existingSecret.name (default "key" .Values.settleKey.existingSecret.key) }}
{{- else if .Values.settleKey.create }}
{{- printf "%s-settle-key key" (include "switchpoint.fullname" .) }}
{{- end }}
{{- end }}

{{- define "switchpoint.hardened" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end }}

{{- define "switchpoint.routerSettings" -}}
image:
  reference: {{ printf "%s:%s" .Values.router.image.repository (default .Chart.AppVersion .Values.router.image.tag) | quote }}
  pullPolicy: {{ .Values.router.image.pullPolicy }}
replicas: {{ .Values.router.replicas | int }}
autoscaling:
  {{- toYaml .Values.router.autoscaling | nindent 2 }}
resources:
  {{- toYaml .Values.router.resources | nindent 2 }}
logLevel: {{ .Values.router.logLevel }}
budgetLeases: {{ .Values.router.budgetLeases }}
redis:
  url: {{ include "switchpoint.redisUrl" . | quote }}
  {{- if .Values.redis.existingSecret.name }}
  existingSecret:
    name: {{ .Values.redis.existingSecret.name }}
    key: {{ .Values.redis.existingSecret.key }}
  {{- end }}
{{- with include "switchpoint.settleKeySecret" . }}
settleKey:
  name: {{ index (splitList " " .) 0 }}
  key: {{ index (splitList " " .) 1 }}
{{- end }}
otlpEndpoint: {{ .Values.otlp.endpoint | quote }}
imagePullSecrets:
  {{- range .Values.imagePullSecrets }}
  - {{ .name | quote }}
  {{- else }} []
  {{- end }}
nodeSelector:
  {{- toYaml .Values.router.nodeSelector | nindent 2 }}
tolerations:
  {{- toYaml .Values.router.tolerations | nindent 2 }}
{{- end }}

{{- /* The namespaced part of the operator's RBAC (a ClusterRole, or a Role per watched namespace). */}}
{{- define "switchpoint.namespacedRules" -}}
- apiGroups: [switchpoint.dev]
  resources: [modelpools, routingpolicies, budgets]
  verbs: [get, list, watch]
- apiGroups: [switchpoint.dev]
  resources: [modelpools/status, routingpolicies/status, budgets/status]
  verbs: [get, patch]
# ownerReferences with blockOwnerDeletion need this where OwnerReferencesPermissionEnforcement is on.
- apiGroups: [switchpoint.dev]
  resources: [routingpolicies/finalizers]
  verbs: [update]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch{{ if .Values.operator.nudgeRouterPods }}, patch{{ end }}]
# Each policy's routers get a ServiceAccount and a Role to list and watch pods (they discover their replicas).
# The API server lets the operator grant only what it holds itself; the admission policy pins the Role's rules.
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [configmaps, services]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, patch, delete]
{{- end }}
