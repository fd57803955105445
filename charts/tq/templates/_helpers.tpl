{{/* Names and labels. */}}
{{- define "tq.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tq.fullname" -}}
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

{{/* A component's resource name: fullname-component, e.g. tq-messaging (TQ_OPERATOR_DEPLOYMENT matches it). */}}
{{- define "tq.componentName" -}}
{{- printf "%s-%s" (include "tq.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The operator's cluster-scoped objects (ClusterRole, binding, peering): unique per release and namespace. */}}
{{- define "tq.operatorClusterName" -}}
{{- printf "%s-operator-%s" (include "tq.fullname" .) .Release.Namespace | trunc 253 | trimSuffix "-" -}}
{{- end -}}

{{- define "tq.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tq.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "tq.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{ include "tq.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: tq
{{- end -}}

{{/* repository:tag (tag: image.tag, else the chart's appVersion), @digest when image.digest is set. */}}
{{- define "tq.image" -}}
{{- $ref := printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- with .Values.image.digest }}{{ $ref = printf "%s@%s" $ref . }}{{ end -}}
{{- $ref -}}
{{- end -}}

{{/* The Secret that holds the bundled databases' URLs (dev). */}}
{{- define "tq.bundledSecret" -}}
{{- printf "%s-bundled" (include "tq.fullname" .) -}}
{{- end -}}

{{/* Environment of every tq container: connections from Secrets, then the env map. Credentials
are not here: each goes only to the component that uses it (tq.credentialsEnv). */}}
{{- define "tq.env" -}}
{{- $v := .Values -}}
- name: TQ_REDIS_URL
  valueFrom:
    secretKeyRef:
      {{- if $v.bundled.redis.enabled }}
      name: {{ include "tq.bundledSecret" . }}
      key: redis-url
      {{- else }}
      name: {{ required "connections.redis.existingSecret is required without bundled.redis" $v.connections.redis.existingSecret }}
      key: {{ $v.connections.redis.urlKey }}
      {{- end }}
- name: TQ_DATABASE_URL
  valueFrom:
    secretKeyRef:
      {{- if $v.bundled.postgres.enabled }}
      name: {{ include "tq.bundledSecret" . }}
      key: database-url
      {{- else }}
      name: {{ required "connections.database.existingSecret is required without bundled.postgres" $v.connections.database.existingSecret }}
      key: {{ $v.connections.database.urlKey }}
      {{- end }}
- name: TQ_SHUTDOWN_GRACE_S
  value: {{ $v.shutdownGraceSeconds | quote }}
{{- range $name, $value := $v.env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/*
A component's own credentials, from Secrets (dict: root, component): the LLM key only in the ai
family, the SMTP and SMS credentials only in messaging, the S3 keys only in media (the admin's
signing key is added by admin.yaml). tests/chart/test_chart.py asserts each pod's environment.
*/}}
{{- define "tq.credentialsEnv" -}}
{{- $v := .root.Values -}}
{{- if eq .component "ai" }}
{{- with $v.credentials.llm }}
{{- if .existingSecret }}
- name: TQ_LLM_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .apiKeyKey }}
{{- end }}
{{- end }}
{{- end }}
{{- if eq .component "messaging" }}
{{- with $v.credentials.smtp }}
{{- if .existingSecret }}
- name: TQ_SMTP_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .usernameKey }}
      optional: true
- name: TQ_SMTP_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .passwordKey }}
{{- end }}
{{- end }}
{{- with $v.credentials.sms }}
{{- if .existingSecret }}
- name: TQ_SMS_PROVIDER_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .tokenKey }}
{{- end }}
{{- end }}
{{- end }}
{{- if eq .component "media" }}
{{- with $v.credentials.s3 }}
{{- if .existingSecret }}
- name: TQ_MEDIA_S3_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .accessKeyIdKey }}
- name: TQ_MEDIA_S3_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .secretAccessKeyKey }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Pod-level settings shared by every tq pod: security, scheduling, drain time. */}}
{{- define "tq.podCommon" -}}
{{- $root := .root -}}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- if eq $root.Values.antiAffinity "soft" }}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "tq.selectorLabels" . | nindent 14 }}
{{- else if eq $root.Values.antiAffinity "hard" }}
affinity:
  podAntiAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "tq.selectorLabels" . | nindent 12 }}
{{- end }}
{{- with $root.Values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- range . }}
  - {{- toYaml . | nindent 4 }}
    labelSelector:
      matchLabels:
        {{- include "tq.selectorLabels" $ | nindent 8 }}
    matchLabelKeys: ["pod-template-hash"]
  {{- end }}
{{- end }}
{{- with $root.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
A tq HTTP component (a family service or the admin): Deployment + Service.
dict: root, component, args, port, replicas (omitted when nil: KEDA owns it), resources,
metrics (it serves /metrics: scrape annotations without a ServiceMonitor), extraEnv (more env entries).
*/}}
{{- define "tq.httpComponent" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $name := include "tq.componentName" . -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  labels:
    {{- include "tq.labels" . | nindent 4 }}
spec:
  {{- if not (kindIs "invalid" .replicas) }}
  replicas: {{ .replicas }}
  {{- end }}
  revisionHistoryLimit: 3
  selector:
    matchLabels:
      {{- include "tq.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "tq.labels" . | nindent 8 }}
      {{- if and .metrics (not $v.metrics.serviceMonitor.enabled) }}
      annotations:
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ .port | quote }}
        prometheus.io/path: /metrics
      {{- end }}
    spec:
      {{- include "tq.podCommon" . | trim | nindent 6 }}
      # the drain (TQ_SHUTDOWN_GRACE_S) must end before the kubelet's SIGKILL
      terminationGracePeriodSeconds: {{ add $v.shutdownGraceSeconds $v.terminationMarginSeconds }}
      automountServiceAccountToken: false
      containers:
        - name: {{ .component }}
          image: {{ include "tq.image" $root }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          args:
            {{- toYaml .args | nindent 12 }}
          ports:
            - name: http
              containerPort: {{ .port }}
              protocol: TCP
          env:
            {{- include "tq.env" $root | nindent 12 }}
            {{- with include "tq.credentialsEnv" . }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- with .extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            {{- toYaml $v.probes.liveness | nindent 12 }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
            {{- toYaml $v.probes.readiness | nindent 12 }}
          resources:
            {{- toYaml .resources | nindent 12 }}
          securityContext:
            {{- toYaml $v.securityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            - name: work
              mountPath: /app
      volumes:
        # readOnlyRootFilesystem: scratch space only where the process writes
        - name: tmp
          emptyDir: {}
        - name: work
          emptyDir: {}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  labels:
    {{- include "tq.labels" . | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "tq.selectorLabels" . | nindent 4 }}
  ports:
    - name: http
      port: {{ .port }}
      targetPort: http
      protocol: TCP
{{- if and $v.pdb.enabled (or (kindIs "invalid" .replicas) (gt (int .replicas) 1)) }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $name }}
  labels:
    {{- include "tq.labels" . | nindent 4 }}
spec:
  maxUnavailable: {{ $v.pdb.maxUnavailable }}
  # a pod that is not ready (e.g. Redis down) never blocks a node drain
  unhealthyPodEvictionPolicy: AlwaysAllow
  selector:
    matchLabels:
      {{- include "tq.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end -}}
