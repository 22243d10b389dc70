#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
echo "demo/web ${WEB_VERSION}: pod=${POD_NAME:-unknown} ip=${POD_IP:-unknown} node=${NODE_NAME:-unknown}"
