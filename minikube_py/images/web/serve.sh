#!/bin/sh
# busybox httpd in the foreground, logging each request to stderr (kubectl logs). There is no
# index.html, so GET / runs cgi-bin/index.cgi, which inherits POD_NAME, POD_IP and NODE_NAME.
echo "demo/web ${WEB_VERSION} listening on port ${PORT:-8080}" >&2
exec /usr/sbin/httpd -f -v -p "${PORT:-8080}" -h /web/www
