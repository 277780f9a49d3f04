"""gunicorn settings for TaskHub's web tier: `gunicorn -c gunicorn.conf.py config.wsgi`.

Every value can be overridden from the environment (GUNICORN_*), so the same file serves a
small VM and a large host. docs/DEPLOY.md explains each choice.
"""

import glob
import multiprocessing
import os

proc_name = "taskhub-web"
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
# Threads keep slow clients from tying up whole processes; each thread holds at most one
# persistent DB connection, so connections = instances x workers x threads (keep it well
# under max_connections: check /api/tasks/db-monitor).
worker_class = "gthread"
workers = int(os.environ.get("GUNICORN_WORKERS", min(multiprocessing.cpu_count() * 2 + 1, 8)))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
# A request running longer than this gets its worker restarted; the API answers in
# milliseconds, the slowest legitimate call (a 1000-task bulk enqueue) in about a second.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
# Longer than nginx's upstream keepalive idles, so gunicorn never closes a connection nginx reuses.
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "75"))
# Recycle workers now and then so a slow leak can never take an instance down.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "10000"))
max_requests_jitter = int(os.environ.get("GUNICORN_MAX_REQUESTS_JITTER", "1000"))
# Only the local reverse proxy may set X-Forwarded-*.
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1")
# Heartbeat files on a RAM disk: a slow or full /tmp must not get healthy workers killed.
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"

accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-")
errorlog = os.environ.get("GUNICORN_ERROR_LOG", "-")
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
# rid= is the id TaskHub returns in X-Request-ID: the same id as in the app's log lines
# (`[<request id>]`) and, behind the nginx example, in nginx's access log.
access_log_format = '%(h)s "%(r)s" %(s)s %(B)s %(M)sms rid=%({x-request-id}o)s ua="%(a)s"'


def on_starting(server):
    """Start with an empty metrics directory: stale files of dead processes would be summed in."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        os.makedirs(directory, exist_ok=True)
        for path in glob.glob(os.path.join(directory, "*.db")):
            os.remove(path)


def child_exit(server, worker):
    """Let prometheus-client drop a dead worker's live gauges in multi-process mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
