{{- /*
Named templates shared by the chart's objects. Object names and labels are fixed, not derived
from the release name: one sluice per cluster, and deploy/uninstall/ (which reads the ConfigMap
sluice-config) and the kustomize base use the same names.
*/ -}}

{{- /* Labels on every object, as the kustomize base's `labels:` puts them (metadata only). */ -}}
{{- define "sluice.labels" -}}
app.kubernetes.io/part-of: sluice
{{- end }}

{{- /* The agent's pods: the DaemonSet's selector (immutable after creation) and the Service's. */ -}}
{{- define "sluice.agentSelector" -}}
app.kubernetes.io/name: sluice
app.kubernetes.io/component: agent
{{- end }}

{{- /* repository:tag, or repository:tag@digest when a digest pins it; the tag defaults to the
chart's appVersion. */ -}}
{{- define "sluice.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}:{{ $tag }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end -}}
{{- end }}

{{- /* k8s-api-server from Cilium's pair of values: https://HOST:PORT (an IPv6 literal in
brackets), or empty for in-cluster. One without the other is refused rather than guessed:
the API server's own port (often 6443) is not the Service's (443). */ -}}
{{- define "sluice.apiServer" -}}
{{- $host := .Values.k8sServiceHost | toString -}}
{{- $port := .Values.k8sServicePort | toString -}}
{{- if and $host (not $port) -}}
{{- fail (printf "k8sServiceHost is %q but k8sServicePort is empty: set both (the API server's own address and port, e.g. 6443), or neither for in-cluster access" $host) -}}
{{- else if and $port (not $host) -}}
{{- fail (printf "k8sServicePort is %q but k8sServiceHost is empty: set both, or neither for in-cluster access" $port) -}}
{{- else if $host -}}
{{- if contains ":" $host -}}
https://[{{ trimPrefix "[" $host | trimSuffix "]" }}]:{{ $port }}
{{- else -}}
https://{{ $host }}:{{ $port }}
{{- end -}}
{{- end -}}
{{- end }}

{{- /* Where a host path under /var/run appears in the agent's container: the image's /var/run is
the link to /run (deploy/Dockerfile checks it), and the mounts are made at the /run path. */ -}}
{{- define "sluice.inContainer" -}}
{{- regexReplaceAll "^/var/run/" . "/run/" -}}
{{- end }}

{{- /* ConfigMap keys that extraConfig may not set, and why: each is set by a value (name it) or
follows from the DaemonSet's mounts and downward API. */ -}}
{{- define "sluice.reservedConfigKeys" -}}
k8s-api-server: k8sServiceHost and k8sServicePort
bpf-lb-sock-hostns-only: socketLB.hostNamespaceOnly
bpf-lb-sock-terminate-pod-connections: socketLB.terminatePodConnections
cni-exclusive: cni.exclusive
cni-bin-dir: cni.binPath
cni-conf-dir: cni.confPath
cni-conf-file-name: cni.confFileName
exclude-namespaces: excludeNamespaces
repair-mode: repair.mode
ambient-dns-capture: ambient.dnsCapture
ztunnel-uds-address: ztunnel.udsAddress
prometheus-serve-addr: prometheus.enabled and prometheus.port
health-serve-addr: healthPort
bpf-pin-dir: nothing (it lies in the host's bpffs mount, where pins outlive the agent)
cgroup-root: nothing (it is where the host's cgroup2 root is mounted)
agent-socket: nothing (the CNI plugin on the host connects to this path of the /var/run/sluice mount)
state-dir: nothing (the /var/run/sluice mount, kept across agent restarts)
node-name: nothing (each agent takes its node from NODE_NAME, the downward API)
{{- end }}

{{- /* The value of a ConfigMap key that extraConfig may change: extraConfig's, else the default.
Called with (list $ "key" "default"). */ -}}
{{- define "sluice.configValue" -}}
{{- $root := index . 0 -}}{{- $key := index . 1 -}}{{- $default := index . 2 -}}
{{- if hasKey $root.Values.extraConfig $key -}}
{{ index $root.Values.extraConfig $key | toString | quote }}
{{- else -}}
{{ $default | quote }}
{{- end -}}
{{- end }}
