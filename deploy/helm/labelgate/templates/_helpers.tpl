{{/* Names and labels. */}}
{{- define "labelgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "labelgate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else if contains (include "labelgate.name" .) .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "labelgate.name" .) | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "labelgate.labels" -}}
app.kubernetes.io/name: {{ include "labelgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: labelgate
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* selectorLabels: call with (list $ "component"). */}}
{{- define "labelgate.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "labelgate.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "labelgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "labelgate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "labelgate.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "labelgate.bundleUrl" -}}
{{- printf "http://%s-bundles:8282" (include "labelgate.fullname" .) -}}
{{- end -}}

{{/* The names the bundle server answers to (its --allowed-host): the Service's, short and
qualified, localhost for port-forward, and bundleServer.allowedHosts. OPA and the embedded
engine use the short one (labelgate.bundleUrl). */}}
{{- define "labelgate.bundleHosts" -}}
{{- $service := printf "%s-bundles" (include "labelgate.fullname" .) -}}
{{- $names := list $service (printf "%s.%s.svc" $service .Release.Namespace) (printf "%s.%s.svc.%s" $service .Release.Namespace .Values.bundleServer.clusterDomain) "localhost" -}}
{{- concat $names .Values.bundleServer.allowedHosts | uniq | toJson -}}
{{- end -}}

{{/* Bundles are signed (bundleServer.signing.secretName): OPA and the embedded engine verify them. */}}
{{- define "labelgate.bundleSigned" -}}
{{- if and .Values.bundleServer.enabled .Values.bundleServer.signing.secretName -}}true{{- end -}}
{{- end -}}

{{- define "labelgate.approvalsUrl" -}}
{{- default (printf "http://%s-approvals.%s.svc:%d" (include "labelgate.fullname" .) .Release.Namespace (int .Values.approvals.service.port)) .Values.approvals.publicUrl -}}
{{- end -}}

{{/* The approvals server runs beside the gateway (SQLite) or as its own workload (PostgreSQL:
the StatefulSet <fullname>-approvals, approvals.yaml). */}}
{{- define "labelgate.approvalsSidecar" -}}
{{- if and .Values.approvals.enabled (eq .Values.approvals.store "sqlite") -}}true{{- end -}}
{{- end -}}
{{- define "labelgate.approvalsDeployment" -}}
{{- if and .Values.approvals.enabled (eq .Values.approvals.store "postgres") -}}true{{- end -}}
{{- end -}}

{{/* More than one gateway pod (replicas or autoscaling). */}}
{{- define "labelgate.gatewayReplicated" -}}
{{- if or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled -}}true{{- end -}}
{{- end -}}
{{/* More than one process serves the approvals inbox: approvals servers (the gateways' admin
ports do not serve it: admin.approvals is false in the chart's config). */}}
{{- define "labelgate.inboxReplicated" -}}
{{- if and (include "labelgate.approvalsDeployment" .) (gt (int .Values.approvals.replicaCount) 1) -}}true{{- end -}}
{{- end -}}

{{/* Refuse combinations that could never work, before anything is applied. */}}
{{- define "labelgate.validate" -}}
{{- if and (include "labelgate.approvalsSidecar" .) (include "labelgate.gatewayReplicated" .) -}}
{{- fail "approvals.store sqlite keeps held calls in one pod's file: use approvals.store=postgres for more than one replica (or autoscaling)" -}}
{{- end -}}
{{- if and (eq .Values.engine "opa") (not .Values.bundleServer.enabled) -}}
{{- fail "engine opa needs bundleServer.enabled: the OPA sidecars follow the bundle server" -}}
{{- end -}}
{{- if and (include "labelgate.gatewayReplicated" .) (not .Values.masking.hashKeySecret.name) -}}
{{- fail "more than one replica needs masking.hashKeySecret.name: hashed values must join across replicas" -}}
{{- end -}}
{{- with .Values.bundleServer -}}
{{- if and .enabled (not (and .tokenSecret.name .readerTokenSecret.name)) -}}
{{- fail "bundleServer.enabled needs bundleServer.tokenSecret.name (the OPAs' instance token) and bundleServer.readerTokenSecret.name (the readers' token): the bundle server does not start without credentials" -}}
{{- end -}}
{{- if and .enabled (eq .tokenSecret.name .readerTokenSecret.name) (eq .tokenSecret.key .readerTokenSecret.key) -}}
{{- fail "bundleServer.tokenSecret and bundleServer.readerTokenSecret name the same key: instances and readers need different tokens" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.approvals.enabled (include "labelgate.inboxReplicated" .) (not .Values.approvals.sessionKeySecret.name) -}}
{{- fail "more than one approvals server needs approvals.sessionKeySecret.name (a Secret with a key of >= 32 bytes, e.g. `openssl rand -hex 32`): the inbox is served by every approvals server, and without a shared key each process signs session cookies with its own random key, so a sign-in made on one replica is refused by the next" -}}
{{- end -}}
{{- if and (include "labelgate.gatewayReplicated" .) .Values.upstream.subjectAssertion.enabled (not .Values.upstream.subjectAssertion.keySecret.name) -}}
{{- fail "more than one replica needs upstream.subjectAssertion.keySecret.name (a Secret with a P-256 private key, PEM): without it each replica signs subject assertions with a key of its own, and the JWKS one replica publishes does not verify another's (or set upstream.subjectAssertion.enabled=false)" -}}
{{- end -}}
{{- if and (include "labelgate.approvalsDeployment" .) (not .Values.approvals.postgres.dsnSecret.name) -}}
{{- fail "approvals.store postgres needs approvals.postgres.dsnSecret.name (a Secret holding the DSN)" -}}
{{- end -}}
{{- if not (or .Values.auth.trustDevKey .Values.auth.jwt.jwksUrl .Values.auth.jwt.jwksSecret) -}}
{{- fail "auth: set auth.jwt.jwksUrl or auth.jwt.jwksSecret (with auth.jwt.issuer), or auth.trustDevKey for a quickstart" -}}
{{- end -}}
{{- end -}}

{{/* securityContext of every container. */}}
{{- define "labelgate.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "labelgate.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The gateway's config (labelgate.yaml); absolute paths, so where the file is mounted does not matter. */}}
{{- define "labelgate.configText" -}}
listen: 0.0.0.0:8443
admin_listen: 0.0.0.0:9090
log_level: {{ .Values.logLevel }}
upstream:
  address: {{ .Values.upstream.address | quote }}
  tls: {{ .Values.upstream.tls }}
  {{- if .Values.upstream.caSecret }}
  ca_file: /etc/labelgate/upstream-ca/ca.crt
  {{- end }}
  {{- if .Values.upstream.serverName }}
  server_name: {{ .Values.upstream.serverName | quote }}
  {{- end }}
  {{- if not .Values.upstream.subjectAssertion.enabled }}
  subject_assertion:
    enabled: false
  {{- else if .Values.upstream.subjectAssertion.keySecret.name }}
  subject_assertion:
    key_file: /etc/labelgate/secrets/assertion-key/{{ .Values.upstream.subjectAssertion.keySecret.key }}
  {{- end }}
{{- if .Values.tls.secretName }}
server_tls:
  cert_file: /etc/labelgate/tls/tls.crt
  key_file: /etc/labelgate/tls/tls.key
{{- end }}
engine: {{ .Values.engine }}
policy:
  {{- if eq .Values.engine "opa" }}
  opa_url: http://127.0.0.1:8181
  {{- else if .Values.bundleServer.enabled }}
  bundle_url: {{ include "labelgate.bundleUrl" . }}
  bundle_name: {{ .Values.bundleServer.bundleName }}
  {{- if include "labelgate.bundleSigned" . }}
  bundle_public_key_file: /etc/labelgate/bundle-key/{{ .Values.bundleServer.signing.publicKey }}
  bundle_signing_alg: {{ .Values.bundleServer.signing.algorithm }}
  {{- end }}
  {{- else }}
  dir: /etc/labelgate/rego
  {{- end }}
{{- if or (eq .Values.engine "opa") (not .Values.bundleServer.enabled) }}
classification:
  catalog_file: /etc/labelgate/rego/labelgate/catalog/data.json
{{- end }}
admin:
  # The approvals API and inbox are the approvals server's alone (its own Service, and
  # networkPolicy.approvalsFrom): the gateway's admin port, open to networkPolicy.adminFrom for
  # metrics and probes, answers 404 there. The approvals server serves them whatever this says.
  approvals: false
  {{- if and .Values.approvals.enabled .Values.approvals.sessionKeySecret.name }}
  # Signs inbox session cookies: the same key in every approvals server.
  session_key_file: /etc/labelgate/secrets/session-key/{{ .Values.approvals.sessionKeySecret.key }}
  {{- end }}
{{- if .Values.masking.hashKeySecret.name }}
masking:
  hash_key_file: /etc/labelgate/secrets/hash-key/{{ .Values.masking.hashKeySecret.key }}
{{- end }}
auth:
  jwt:
    {{- if or .Values.auth.jwt.jwksUrl .Values.auth.jwt.jwksSecret }}
    issuer: {{ required "auth.jwt.issuer is required with a JWKS" .Values.auth.jwt.issuer | quote }}
    audience: {{ .Values.auth.jwt.audience | quote }}
    {{- if .Values.auth.jwt.jwksUrl }}
    jwks_url: {{ .Values.auth.jwt.jwksUrl | quote }}
    {{- else }}
    jwks_file: /etc/labelgate/jwks/jwks.json
    {{- end }}
    {{- end }}
    groups_claim: {{ .Values.auth.jwt.groupsClaim | quote }}
    {{- if .Values.auth.trustDevKey }}
    # INSECURE: accepts tokens minted by `labelgate dev-token` (quickstart only).
    trust_dev_key: true
    dev_keys_dir: /etc/labelgate/dev-keys
    {{- end }}
{{- if .Values.audit.enabled }}
audit:
  socket: /run/labelgate/audit/audit.sock
{{- end }}
{{- if .Values.recording.enabled }}
recording:
  # The sessions/ folder of the pod's audit-log volume (gateway.yaml).
  dir: /var/lib/labelgate/sessions
  retention_days: {{ .Values.recording.retentionDays }}
  {{- if .Values.recording.encryptionKeySecret.name }}
  encryption_key_file: /etc/labelgate/secrets/recording-key/{{ .Values.recording.encryptionKeySecret.key }}
  {{- end }}
{{- end }}
approvals:
  enabled: {{ .Values.approvals.enabled }}
  {{- if .Values.approvals.enabled }}
  store: {{ .Values.approvals.store }}
  {{- if eq .Values.approvals.store "sqlite" }}
  sqlite_file: /var/lib/labelgate/state/approvals.db
  {{- end }}
  public_url: {{ include "labelgate.approvalsUrl" . | quote }}
  hold_timeout_seconds: {{ .Values.approvals.holdTimeoutSeconds }}
  admin_groups: {{ toJson .Values.approvals.adminGroups }}
  {{- end }}
{{- end -}}

{{- define "labelgate.config" -}}
{{- $config := include "labelgate.configText" . | fromYaml -}}
{{- $config = mergeOverwrite $config (deepCopy .Values.extraConfig) -}}
{{- toYaml $config -}}
{{- end -}}

{{/* OPA's config: bundles, status and decision logs all go to the bundle server's `bundles`
service, with the instance token mounted from bundleServer.tokenSecret. With signing, the public
key is read from its mounted Secret by `--set-file keys.<keyId>.key=...` (labelgate.opaArgs). */}}
{{- define "labelgate.opaConfig" -}}
services:
  bundles:
    url: {{ include "labelgate.bundleUrl" . }}
    credentials:
      bearer:
        token_path: /etc/opa/token/{{ .Values.bundleServer.tokenSecret.key }}
bundles:
  {{ .Values.bundleServer.bundleName }}:
    service: bundles
    resource: bundles/{{ .Values.bundleServer.bundleName }}
    persist: true
    polling:
      min_delay_seconds: 10
      max_delay_seconds: 30
      long_polling_timeout_seconds: 30
    {{- if include "labelgate.bundleSigned" . }}
    signing:
      keyid: {{ .Values.bundleServer.signing.keyId }}
    {{- end }}
{{- if include "labelgate.bundleSigned" . }}
keys:
  {{ .Values.bundleServer.signing.keyId }}:
    algorithm: {{ .Values.bundleServer.signing.algorithm }}
{{- end }}
persistence_directory: /var/opa
status:
  service: bundles
{{- if .Values.opa.decisionLogs }}
decision_logs:
  service: bundles
  reporting:
    min_delay_seconds: 5
    max_delay_seconds: 10
{{- end }}
{{- end -}}

{{/* exec probe: the audit writer's socket accepts connections. */}}
{{- define "labelgate.auditProbe" -}}
exec:
  command:
    - python
    - -c
    - "import socket; s = socket.socket(socket.AF_UNIX); s.settimeout(2); s.connect('/run/labelgate/audit/audit.sock')"
{{- end -}}

{{- define "labelgate.dnsEgress" -}}
- to:
    - namespaceSelector: {}
      podSelector:
        matchLabels:
          k8s-app: kube-dns
  ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
{{- end -}}

{{/* The inbox's session key (approvals.sessionKeySecret), mounted read-only where the config
names it, in every container serving the inbox: call with the root context. */}}
{{- define "labelgate.sessionKeyMount" -}}
{{- if and .Values.approvals.enabled .Values.approvals.sessionKeySecret.name -}}
- {name: session-key, mountPath: /etc/labelgate/secrets/session-key, readOnly: true}
{{- end -}}
{{- end -}}
{{- define "labelgate.sessionKeyVolume" -}}
{{- if and .Values.approvals.enabled .Values.approvals.sessionKeySecret.name -}}
- name: session-key
  secret:
    secretName: {{ .Values.approvals.sessionKeySecret.name }}
    defaultMode: 0400
    items: [{key: {{ .Values.approvals.sessionKeySecret.key }}, path: {{ .Values.approvals.sessionKeySecret.key }}}]
{{- end -}}
{{- end -}}

{{/* The audit writer, a native sidecar (restartPolicy: Always) of every pod whose processes
append to the audit log (the gateways; the approvals servers, for their votes): up before them,
stopped only after them, so their last records still reach the log. One writer and one hash
chain per pod, the log on the pod's audit-log volume. */}}
{{- define "labelgate.auditWriter" -}}
# A native sidecar (restartPolicy: Always): up before the processes that append to the log,
# and stopped only after them, so their last records still reach it.
- name: audit-writer
  image: {{ include "labelgate.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  restartPolicy: Always
  args:
    - audit
    - writer
    - --socket
    - /run/labelgate/audit/audit.sock
    - --log-dir
    - /var/lib/labelgate/audit/log
    {{- if .Values.audit.signingKeySecret.name }}
    - --signing-key
    - /etc/labelgate/audit-key/{{ .Values.audit.signingKeySecret.key }}
    {{- end }}
    - --log-level
    - {{ .Values.logLevel }}
  securityContext:
    {{- include "labelgate.containerSecurityContext" . | nindent 4 }}
  startupProbe:
    {{- include "labelgate.auditProbe" . | nindent 4 }}
    periodSeconds: 1
    failureThreshold: 30
  livenessProbe:
    {{- include "labelgate.auditProbe" . | nindent 4 }}
    periodSeconds: 20
    timeoutSeconds: 5
  resources:
    {{- toYaml .Values.audit.resources | nindent 4 }}
  volumeMounts:
    - {name: audit-socket, mountPath: /run/labelgate/audit}
    - {name: audit-log, mountPath: /var/lib/labelgate/audit}
    - {name: tmp, mountPath: /tmp}
    {{- if .Values.audit.signingKeySecret.name }}
    - {name: audit-key, mountPath: /etc/labelgate/audit-key, readOnly: true}
    {{- end }}
{{- end -}}

{{/* The audit writer's volumes (with audit.enabled): its socket's folder, shared only with
the containers that append (the gateway, the approvals server); the log's emptyDir without
persistence (else the pod's audit-log claim); the checkpoint signing key. */}}
{{- define "labelgate.auditVolumes" -}}
{{- if .Values.audit.enabled -}}
# Only the audit writer and the processes that append (gateway, approvals server) mount it.
- name: audit-socket
  emptyDir: {medium: Memory, sizeLimit: 1Mi}
{{- if not .Values.audit.persistence.enabled }}
- name: audit-log
  emptyDir: {}
{{- end }}
{{- if .Values.audit.signingKeySecret.name }}
- name: audit-key
  secret:
    secretName: {{ .Values.audit.signingKeySecret.name }}
    defaultMode: 0400
    items: [{key: {{ .Values.audit.signingKeySecret.key }}, path: {{ .Values.audit.signingKeySecret.key }}}]
{{- end }}
{{- end -}}
{{- end -}}

{{/* The pod's audit-log PersistentVolumeClaim template: call with (list $ "component"). */}}
{{- define "labelgate.auditLogClaim" -}}
{{- $root := index . 0 -}}
- metadata:
    name: audit-log
    labels:
      {{- include "labelgate.selectorLabels" . | nindent 6 }}
  spec:
    accessModes: [ReadWriteOnce]
    {{- with $root.Values.audit.persistence.storageClassName }}
    storageClassName: {{ . }}
    {{- end }}
    resources:
      requests:
        storage: {{ $root.Values.audit.persistence.size }}
{{- end -}}
