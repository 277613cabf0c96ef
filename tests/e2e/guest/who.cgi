#!/bin/sh
# The guests' web servers (busybox httpd, one per port) answer with who saw whom.
printf 'Content-Type: text/plain\r\n\r\n'
echo "$(hostname) saw $REMOTE_ADDR:$REMOTE_PORT"
