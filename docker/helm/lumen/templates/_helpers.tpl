{{/* Shared names and labels. */}}

{{- define "lumen.labels" -}}
app.kubernetes.io/part-of: lumen
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* An image reference: repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "lumen.image" -}}
{{- $tag := toString (default .root.Chart.AppVersion .image.tag) -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}

{{/* kubeProxyReplacement as a boolean (Cilium's chart also takes "true"/"false"). */}}
{{- define "lumen.kubeProxyReplacement" -}}
{{- eq (toString .Values.kubeProxyReplacement) "true" -}}
{{- end -}}

{{/* The cluster pool as a list: Cilium's chart takes a list or a comma-separated string. */}}
{{- define "lumen.clusterPool" -}}
{{- $list := .Values.ipam.operator.clusterPoolIPv4PodCIDRList -}}
{{- if kindIs "string" $list -}}
{{- $list = splitList "," $list -}}
{{- end -}}
{{- $out := list -}}
{{- range $list -}}
{{- if trim . -}}{{- $out = append $out (trim .) -}}{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* Env of every component that talks to the API server without kube-proxy. */}}
{{- define "lumen.apiServerEnv" -}}
{{- if .Values.k8sServiceHost }}
- name: KUBERNETES_SERVICE_HOST
  value: {{ .Values.k8sServiceHost | quote }}
{{- end }}
{{- if toString .Values.k8sServicePort }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ toString .Values.k8sServicePort | quote }}
{{- end }}
{{- end -}}

{{/* The relay's address as the UI dials it. */}}
{{- define "lumen.relayAddress" -}}
{{- printf "hubble-relay.%s.svc.%s:80" .Release.Namespace .Values.hubble.peerService.clusterDomain -}}
{{- end -}}
