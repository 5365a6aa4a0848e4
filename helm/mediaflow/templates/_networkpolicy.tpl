{{/* Egress rules every mediaflow pod needs: DNS, Redis, storage, the OTel collector. */}}
{{- define "mediaflow.np.commonEgress" -}}
{{- $np := .Values.networkPolicy -}}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ $np.dnsNamespace }}
  ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
{{- if .Values.redis.bundled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "mediaflow.selectorLabels" (dict "root" . "component" "redis") | nindent 10 }}
  ports:
    - {port: 6379, protocol: TCP}
{{- else }}
- ports:
    - {port: {{ .Values.redis.external.port }}, protocol: TCP}
  {{- with .Values.redis.external.cidrs }}
  to:
    {{- range . }}
    - ipBlock: {cidr: {{ . | quote }}}
    {{- end }}
  {{- end }}
{{- end }}
{{- if eq .Values.storage.type "s3" }}
- ports:
    {{- range .Values.storage.s3.ports }}
    - {port: {{ . }}, protocol: TCP}
    {{- end }}
  {{- with .Values.storage.s3.cidrs }}
  to:
    {{- range . }}
    - ipBlock: {cidr: {{ . | quote }}}
    {{- end }}
  {{- end }}
{{- end }}
{{- if .Values.otel.endpoint }}
{{- $c := .Values.otel.collector }}
- ports:
    {{- range $c.ports }}
    - {port: {{ . }}, protocol: TCP}
    {{- end }}
  {{- if or $c.namespaceSelector $c.podSelector $c.cidrs }}
  to:
    {{- if or $c.namespaceSelector $c.podSelector }}
    - {{- with $c.namespaceSelector }}
      namespaceSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $c.podSelector }}
      podSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    {{- end }}
    {{- range $c.cidrs }}
    - ipBlock: {cidr: {{ . | quote }}}
    {{- end }}
  {{- end }}
{{- end }}
{{- end -}}
