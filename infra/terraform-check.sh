#!/bin/sh
# `terraform validate` and `terraform test` (a plan against a mocked AWS provider, see
# envs/shared/plan.tftest.hcl) of every environment. Skipped, saying so, where terraform is not
# installed. The AWS provider comes from a filesystem mirror when this machine has one
# ($TF_PLUGIN_DIR or the usual places), else from the registry, checked against the committed
# .terraform.lock.hcl.
set -eu

if ! command -v terraform >/dev/null 2>&1; then
    echo "terraform is not installed: skipping terraform validate and terraform test"
    exit 0
fi

infra=$(cd "$(dirname "$0")" && pwd)
mirror=""
for dir in "${TF_PLUGIN_DIR:-}" /opt/tf-plugins /usr/local/share/terraform/plugins \
           /usr/share/terraform/plugins "$HOME/.terraform.d/plugins"; do
    if [ -n "$dir" ] && [ -d "$dir/registry.terraform.io/hashicorp/aws" ]; then
        mirror=$dir
        break
    fi
done

# The plan hashes the Lambda zips (`make package`); placeholders stand in for them here.
artifacts=$(mktemp -d)
trap 'rm -rf "$artifacts"' EXIT
for artifact in $(python3 -c "import json, sys; s = json.load(open(sys.argv[1])); print(' '.join(f['artifact'] for f in s['deploy']['functions'].values()))" "$infra/settings.json"); do
    mkdir -p "$artifacts/$(dirname "$artifact")"
    echo placeholder > "$artifacts/$artifact"
done

export TF_IN_AUTOMATION=1
# No CLI configuration is needed; without one terraform warns that ~/.terraformrc is missing.
if [ ! -e "${TF_CLI_CONFIG_FILE:-$HOME/.terraformrc}" ]; then
    export TF_CLI_CONFIG_FILE="$artifacts/terraformrc"
    : > "$TF_CLI_CONFIG_FILE"
fi
for env in dev prod; do
    echo "== infra/envs/$env"
    cd "$infra/envs/$env"
    terraform init -backend=false -input=false -no-color -lockfile=readonly ${mirror:+-plugin-dir="$mirror"} >/dev/null
    terraform validate -no-color
    terraform test -no-color -var="artifacts_root=$artifacts"
done
