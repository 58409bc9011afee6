#!/bin/sh
# ifupdown mapping script: choose a logical interface by the NIC's MAC address.
#
# Usage (from /etc/network/interfaces):
#     mapping eth0
#         script /etc/network/get-mac-address.sh
#         map 02:00:00:00:00:01 vhost1
#         map 02:00:00:00:00:02 vhost2
#
# ifupdown runs "get-mac-address.sh eth0" with the "map" lines ("MAC scheme") on
# stdin.  The MAC of the interface is read from /sys/class/net/<iface>/address
# (or "ip link show <iface>"), compared case-insensitively with each line, and
# the scheme of the first match is printed (exit 0).  No match, or no readable
# MAC: exit 1 (ifupdown then keeps the physical name).  Usage error: exit 2.
# POSIX sh only (dash, busybox sh).

LC_ALL=C
export LC_ALL

if [ "$#" -ne 1 ] || [ -z "$1" ]; then
	echo "usage: ${0##*/} IFACE < lines of 'MAC scheme'" >&2
	exit 2
fi
iface=$1
case $iface in
	*/* | . | ..)
		echo "${0##*/}: invalid interface name: $iface" >&2
		exit 2
		;;
esac

lower() {
	printf '%s\n' "$1" | tr 'ABCDEF' 'abcdef'
}

mac=
if [ -r "/sys/class/net/$iface/address" ]; then
	read -r mac < "/sys/class/net/$iface/address" || mac=
fi
if [ -z "$mac" ]; then
	mac=$(ip link show dev "$iface" 2>/dev/null |
		sed -n 's|^[[:space:]]*link/[^[:space:]]*[[:space:]]\{1,\}\([0-9A-Fa-f:]\{1,\}\).*|\1|p' |
		head -n 1)
fi
if [ -z "$mac" ]; then
	echo "${0##*/}: cannot read the MAC address of $iface" >&2
	exit 1
fi
mac=$(lower "$mac")

while read -r testmac scheme rest || [ -n "$testmac" ]; do
	case $testmac in
		'' | '#'*) continue ;;
	esac
	if [ -n "$scheme" ] && [ "$(lower "$testmac")" = "$mac" ]; then
		printf '%s\n' "$scheme"
		exit 0
	fi
done
exit 1
