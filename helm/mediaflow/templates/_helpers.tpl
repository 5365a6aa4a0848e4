{{/* Names and labels. */}}
{{- define "mediaflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mediaflow.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "gateway") */}}
{{- define "mediaflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mediaflow.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "mediaflow.labels" -}}
{{ include "mediaflow.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: mediaflow
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels shared by every pod of the release (NetworkPolicy selectors). */}}
{{- define "mediaflow.releaseSelector" -}}
app.kubernetes.io/name: {{ include "mediaflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Image reference: (dict "root" $ "image" .Values.images.api). skaffold passes "tag@digest";
     without a digest (images loaded straight into a local cluster) the dangling "@" is dropped. */}}
{{- define "mediaflow.image" -}}
{{- $tag := default .root.Chart.AppVersion .image.tag | toString | trimSuffix "@" -}}
{{- if hasPrefix "sha256:" $tag -}}
{{- printf "%s@%s" .image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
The worker pools. The queue keys are the code's contract (mediaflow.common.queues); the chart's tests
compare them with the code, so a rename on either side fails `make test`.
*/}}
{{- define "mediaflow.pools" -}}
transcriber:
  component: transcriber
  service: transcriber
  image: transcriber
  queueKey: "mediaflow:queue:transcribe"
  command: [mediaflow-transcriber]
  args: []
  grpcPortEnv: MEDIAFLOW_TRANSCRIBER_GRPC_PORT
compositor:
  component: compositor
  service: compositor
  image: compositor
  queueKey: "mediaflow:queue:compose"
  command: [mediaflow-compositor]
  args: [--queue, compose]
  grpcPortEnv: MEDIAFLOW_COMPOSITOR_GRPC_PORT
compositorHeavy:
  component: compositor-heavy
  service: compositor
  image: compositor
  queueKey: "mediaflow:queue:compose-heavy"
  command: [mediaflow-compositor]
  args: [--queue, compose-heavy]
  grpcPortEnv: MEDIAFLOW_COMPOSITOR_GRPC_PORT
{{- end -}}

{{/* "true" when a pool runs on GPU nodes: (dict "root" $ "pool" $poolValues) */}}
{{- define "mediaflow.onGpu" -}}
{{- if and .root.Values.gpu.enabled .pool.gpu.enabled -}}true{{- end -}}
{{- end -}}

{{/* Redis connection. */}}
{{- define "mediaflow.redisHost" -}}
{{- if .Values.redis.bundled -}}
{{- printf "%s-redis.%s.svc" (include "mediaflow.fullname" .) .Release.Namespace -}}
{{- else -}}
{{- required "redis.external.host is required when redis.bundled=false" .Values.redis.external.host -}}
{{- end -}}
{{- end -}}

{{- define "mediaflow.redisPort" -}}
{{- if .Values.redis.bundled -}}6379{{- else -}}{{ .Values.redis.external.port }}{{- end -}}
{{- end -}}

{{- define "mediaflow.redisDatabase" -}}
{{- if .Values.redis.bundled -}}0{{- else -}}{{ .Values.redis.external.database }}{{- end -}}
{{- end -}}

{{- define "mediaflow.redisTls" -}}
{{- if and (not .Values.redis.bundled) .Values.redis.external.tls -}}true{{- end -}}
{{- end -}}

{{/* Secret holding `redis-password`, or "" when Redis needs no password. */}}
{{- define "mediaflow.redisSecretName" -}}
{{- if .Values.redis.bundled -}}
{{- default (printf "%s-redis" (include "mediaflow.fullname" .)) .Values.redis.existingSecret -}}
{{- else if .Values.redis.external.existingSecret -}}
{{- .Values.redis.external.existingSecret -}}
{{- else if .Values.redis.external.password -}}
{{- printf "%s-redis" (include "mediaflow.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "mediaflow.s3SecretName" -}}
{{- if eq .Values.storage.type "s3" -}}
{{- if .Values.storage.s3.existingSecret -}}
{{- .Values.storage.s3.existingSecret -}}
{{- else if .Values.storage.s3.accessKeyId -}}
{{- printf "%s-s3" (include "mediaflow.fullname" .) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "mediaflow.apiKeysSecretName" -}}
{{- default (printf "%s-api-keys" (include "mediaflow.fullname" .)) .Values.apiKeys.existingSecret -}}
{{- end -}}

{{- define "mediaflow.storageClaimName" -}}
{{- default (printf "%s-storage" (include "mediaflow.fullname" .)) .Values.storage.pvc.existingClaim -}}
{{- end -}}

{{/* Environment every mediaflow container gets: the ConfigMap, the Redis URL built from the password
     Secret, S3 credentials, and the pod's identity for OTel resource attributes. */}}
{{- define "mediaflow.commonEnv" -}}
{{- $secret := include "mediaflow.redisSecretName" . -}}
{{- $scheme := ternary "rediss" "redis" (eq (include "mediaflow.redisTls" .) "true") -}}
{{- $hostPort := printf "%s:%s/%s" (include "mediaflow.redisHost" .) (include "mediaflow.redisPort" .) (include "mediaflow.redisDatabase" .) -}}
- name: K8S_POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
- name: K8S_NAMESPACE
  valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
- name: K8S_NODE_NAME
  valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
{{- if $secret }}
- name: MEDIAFLOW_REDIS_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: redis-password}
- name: MEDIAFLOW_REDIS_URL
  value: {{ printf "%s://:$(MEDIAFLOW_REDIS_PASSWORD)@%s" $scheme $hostPort | quote }}
{{- else }}
- name: MEDIAFLOW_REDIS_URL
  value: {{ printf "%s://%s" $scheme $hostPort | quote }}
{{- end }}
{{- with include "mediaflow.s3SecretName" . }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef: {name: {{ . }}, key: AWS_ACCESS_KEY_ID}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ . }}, key: AWS_SECRET_ACCESS_KEY}
{{- end }}
- name: MEDIAFLOW_GRPC_TOKEN
  valueFrom:
    secretKeyRef: {name: {{ include "mediaflow.grpcSecretName" . }}, key: grpc-token}
{{- with include "mediaflow.webhookSecretName" . }}
- name: MEDIAFLOW_WEBHOOK_SECRET
  valueFrom:
    secretKeyRef: {name: {{ . }}, key: webhook-secret}
- name: MEDIAFLOW_TENANT_WEBHOOK_SECRETS
  valueFrom:
    secretKeyRef: {name: {{ . }}, key: tenant-webhook-secrets, optional: true}
{{- end }}
{{- if .Values.otel.endpoint }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ include "mediaflow.otelResourceAttributes" . | quote }}
{{- end }}
{{- end -}}

{{- define "mediaflow.otelResourceAttributes" -}}
{{- $attrs := list "k8s.pod.name=$(K8S_POD_NAME)" "k8s.namespace.name=$(K8S_NAMESPACE)" "k8s.node.name=$(K8S_NODE_NAME)" -}}
{{- range $k, $v := .Values.otel.resourceAttributes -}}
{{- $attrs = append $attrs (printf "%s=%s" $k $v) -}}
{{- end -}}
{{- join "," $attrs -}}
{{- end -}}

{{- define "mediaflow.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.fsGroup }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "mediaflow.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Volumes every mediaflow pod mounts: writable /tmp and the shared storage volume. */}}
{{- define "mediaflow.commonVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .tmpSize }}
{{- if eq .root.Values.storage.type "pvc" }}
- name: storage
  persistentVolumeClaim:
    claimName: {{ include "mediaflow.storageClaimName" .root }}
{{- end }}
{{- end -}}

{{- define "mediaflow.commonVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if eq .Values.storage.type "pvc" }}
- name: storage
  mountPath: {{ .Values.storage.pvc.mountPath }}
{{- end }}
{{- end -}}

{{/* The Secret holding the gRPC token shared by the gateway and the workers. */}}
{{- define "mediaflow.grpcSecretName" -}}
{{- default (printf "%s-grpc" (include "mediaflow.fullname" .)) .Values.grpc.existingSecret -}}
{{- end -}}

{{/* The Secret holding the webhook signing secret, or "" when webhooks are off. */}}
{{- define "mediaflow.webhookSecretName" -}}
{{- if and .Values.webhooks.tenantSecrets (not (or .Values.webhooks.secret .Values.webhooks.existingSecret)) -}}
{{- fail "webhooks.tenantSecrets needs webhooks.secret (or existingSecret): it switches webhooks on and signs for the other tenants" -}}
{{- end -}}
{{- if .Values.webhooks.existingSecret -}}
{{- .Values.webhooks.existingSecret -}}
{{- else if .Values.webhooks.secret -}}
{{- printf "%s-webhooks" (include "mediaflow.fullname" .) -}}
{{- end -}}
{{- end -}}
