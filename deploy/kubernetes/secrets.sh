#!/usr/bin/env bash
# Creates (or updates) every Secret the manifests in this folder refer to, in the current
# kubectl namespace: the mesh's certificates (issued here with `agentmesh certs`, kept in
# $CERTS, by default ./certs) and PostgreSQL's password with the orchestrators' database URL.
#
#   bash deploy/kubernetes/secrets.sh && kubectl apply -k deploy/kubernetes
#
# Each workload's Secret holds only ca.pem and its own certificate and key (tls.crt, tls.key):
# the CA key stays in $CERTS. tests/test_deploy.py checks that this script creates every
# Secret, with every key, that the manifests mount or read.
set -euo pipefail

CERTS=${CERTS:-certs}

apply() {
    kubectl apply -f -
}

# certs_secret SECRET KIND NAME: ca.pem and $CERTS/KIND/NAME.pem/.key as tls.crt and tls.key.
certs_secret() {
    kubectl create secret generic "$1" \
        --from-file=ca.pem="$CERTS/ca.pem" \
        --from-file=tls.crt="$CERTS/$2/$3.pem" \
        --from-file=tls.key="$CERTS/$2/$3.key" \
        --dry-run=client -o yaml | apply
}

# The orchestrators' certificate carries every name agents and clients dial them by.
[[ -f $CERTS/ca.pem ]] || agentmesh certs init --dir "$CERTS" \
    --host agentmesh \
    --host agentmesh-orchestrator \
    --host agentmesh-orchestrator-0.agentmesh-orchestrator \
    --host agentmesh-orchestrator-1.agentmesh-orchestrator
for agent in splitter analyst writer; do
    [[ -f $CERTS/agent/$agent.pem ]] ||
        agentmesh certs issue agent "$agent" --dir "$CERTS" --host "agent-$agent"
done

certs_secret agentmesh-orchestrator-certs orchestrator orchestrator
certs_secret agentmesh-agent-splitter-certs agent splitter
certs_secret agentmesh-agent-analyst-certs agent analyst
certs_secret agentmesh-agent-writer-certs agent writer

# A password made once: an existing Secret keeps its own.
if ! kubectl get secret agentmesh-postgres >/dev/null 2>&1; then
    password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
    kubectl create secret generic agentmesh-postgres \
        --from-literal=password="$password" \
        --dry-run=client -o yaml | apply
    kubectl create secret generic agentmesh-database \
        --from-literal=url="postgresql+asyncpg://agentmesh:$password@postgres:5432/agentmesh" \
        --dry-run=client -o yaml | apply
fi
