#!/bin/sh
# invite-server `command` provisioner for ejabberd, through ejabberdctl.
#   [hosts."example.com".provision]
#   kind = "command"
#   command = ["/usr/local/lib/invite-server/ejabberd.sh"]
# Reads one JSON object on stdin; exit 0 done, 3 name taken, else failure.
# Needs jq. Never prints the password.
set -u
req=$(cat)
field() { printf '%s' "$req" | jq -r ".$1 // empty"; }
action=$(field action); host=$(field host); name=$(field name)
case "$action" in
  create)
    if ejabberdctl check_account "$name" "$host" >/dev/null 2>&1; then exit 3; fi
    field password | xargs -0 ejabberdctl register "$name" "$host" >/dev/null ;;
  password) field password | xargs -0 ejabberdctl change_password "$name" "$host" >/dev/null ;;
  delete) ejabberdctl unregister "$name" "$host" >/dev/null ;;
  disable) ejabberdctl ban_account "$name" "$host" "disabled by invite-server" >/dev/null ;;
  enable) ejabberdctl unban_account "$name" "$host" >/dev/null ;;
  *) exit 1 ;;
esac
