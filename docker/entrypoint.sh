#!/bin/sh
# Apply migrations and collect static files once, then run the given command.
set -e
if [ "${CXR_MIGRATE_ON_START:-0}" = "1" ]; then
  python manage.py migrate --noinput
  python manage.py collectstatic --noinput -v0
fi
exec "$@"
