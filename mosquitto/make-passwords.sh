#!/bin/sh
# Creates or updates a Mosquitto password file for the cloudpush MQTT users.
#
# usage: mosquitto/make-passwords.sh [-o OWNER[:GROUP]] PASSWORD_FILE [USER...]
#
#   PASSWORD_FILE  the file for mosquitto's password_file (created with mode
#                  0600 when missing)
#   USER...        which users to handle (default: all three):
#                  cloudpush-bridge cloudpush-httpapi cloudpush-service;
#                  cloudpush-broker (broker-to-broker links, see
#                  bridge-example.conf) only when named
#   -o OWNER       chown the file afterwards, e.g. "-o mosquitto": mosquitto
#                  started as root reads the file as the user "mosquitto"
#
# Passwords come from the environment:
#   cloudpush-bridge   CLOUDPUSH_BRIDGE_MQTT_PASSWORD
#   cloudpush-httpapi  CLOUDPUSH_HTTPAPI_MQTT_PASSWORD
#   cloudpush-service  CLOUDPUSH_SERVICE_MQTT_PASSWORD
#   cloudpush-broker   CLOUDPUSH_BROKER_MQTT_PASSWORD
#
# Idempotent: a user whose variable is set gets that password (set or
# replaced); a user without a variable who is already in the file is left
# alone; a user without a variable who is missing gets a random password,
# printed ONCE on stdout as "user:password" (it is stored only hashed).
# Running it twice with the same environment changes nothing the second time
# except re-hashing passwords given by variables.
set -eu

prog=$(basename "$0")
all_users="cloudpush-bridge cloudpush-httpapi cloudpush-service"
known_users="$all_users cloudpush-broker"

usage() {
    sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'
}

die() {
    echo "$prog: $*" >&2
    exit 2
}

owner=
while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help)
            usage
            exit 0
            ;;
        -o)
            [ $# -ge 2 ] || die "-o needs OWNER[:GROUP] (see --help)"
            owner=$2
            shift 2
            ;;
        --)
            shift
            break
            ;;
        -*)
            echo "$prog: unknown option '$1'" >&2
            usage >&2
            exit 2
            ;;
        *) break ;;
    esac
done

if [ $# -lt 1 ]; then
    usage >&2
    exit 2
fi
file=$1
shift
users=${*:-$all_users}

command -v mosquitto_passwd >/dev/null 2>&1 ||
    die "mosquitto_passwd not found (Debian: apt-get install mosquitto)"

env_name() {
    case "$1" in
        cloudpush-bridge) echo CLOUDPUSH_BRIDGE_MQTT_PASSWORD ;;
        cloudpush-httpapi) echo CLOUDPUSH_HTTPAPI_MQTT_PASSWORD ;;
        cloudpush-service) echo CLOUDPUSH_SERVICE_MQTT_PASSWORD ;;
        cloudpush-broker) echo CLOUDPUSH_BROKER_MQTT_PASSWORD ;;
        *) return 1 ;;
    esac
}

for u in $users; do
    env_name "$u" >/dev/null || die "unknown user '$u' (known: $known_users)"
done

random_password() {
    # 48 random bytes -> 32 characters of [A-Za-z0-9] (base64 minus symbols).
    head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32
}

has_user() {
    [ -f "$file" ] && grep -q "^$1:" "$file"
}

set_password() {
    # mosquitto_passwd -b cannot create a file, -c truncates one.
    if [ -f "$file" ]; then
        mosquitto_passwd -b "$file" "$1" "$2"
    else
        (umask 077 && mosquitto_passwd -c -b "$file" "$1" "$2")
    fi
}

generated=
for u in $users; do
    var=$(env_name "$u")
    eval "pw=\${$var:-}"
    if [ -n "$pw" ]; then
        set_password "$u" "$pw"
        echo "$prog: $u: password set from \$$var" >&2
    elif has_user "$u"; then
        echo "$prog: $u: already in $file, kept (set \$$var to change it)" >&2
    else
        pw=$(random_password)
        [ ${#pw} -ge 20 ] || die "could not generate a random password"
        set_password "$u" "$pw"
        generated="$generated$u:$pw
"
    fi
done

chmod go-rwx "$file"
if [ -n "$owner" ]; then
    chown "$owner" "$file"
fi

if [ -n "$generated" ]; then
    echo "$prog: generated passwords (shown only now; store them, e.g. as" >&2
    echo "$prog: CLOUDPUSH_MQTT_PASSWORD of each component):" >&2
    printf '%s' "$generated"
fi
