#!/usr/bin/env sh
# Make the admission webhook's certificate: a private CA and a serving
# certificate for modelserve-operator-webhook.<namespace>.svc, signed by it.
#
#   config/secrets/generate-webhook-cert.sh [DIR] [NAMESPACE]
#
# Writes ca.crt, tls.crt and tls.key into DIR (default: this folder), where
# config/kustomization.yaml turns them into the Secret modelserve-webhook-tls and
# copies ca.crt into both webhook configurations' caBundle. The CA's key is not
# kept: renewing means running this again (valid 825 days) and re-applying.
# Existing files are left alone. Needs openssl.
set -eu
dir=${1:-$(dirname "$0")}
namespace=${2:-modelserve}
service=modelserve-operator-webhook.$namespace.svc
if [ -s "$dir/tls.crt" ] && [ -s "$dir/tls.key" ] && [ -s "$dir/ca.crt" ]; then
    echo "$dir already holds ca.crt, tls.crt and tls.key: nothing to do"
    exit 0
fi
mkdir -p "$dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 077
openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$work/ca.key" -out "$work/ca.crt" -days 825 \
    -subj "/CN=modelserve-webhook-ca" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$work/tls.key" -out "$work/tls.csr" -subj "/CN=$service"
printf 'subjectAltName=DNS:%s,DNS:%s.cluster.local\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' \
    "$service" "$service" > "$work/ext.cnf"
openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" \
    -CAcreateserial -days 825 -extfile "$work/ext.cnf" -out "$work/tls.crt" 2>/dev/null
cp "$work/ca.crt" "$work/tls.crt" "$work/tls.key" "$dir/"
echo "wrote $dir/ca.crt, $dir/tls.crt, $dir/tls.key for $service"
