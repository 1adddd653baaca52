"""The web process of jobs (``module: jobsvc.web``): enqueue a job, read it back.

    GET  /             {"service": "jobs", "version", "release", ...}
    GET  /health       {"status": "ok"} (without Redis: the web process does not need it to answer)
    POST /jobs?word=W&seconds=S   202 {"id": ...}: jobsvc.tasks.process(W, S) queued for the worker
    GET  /jobs/<id>    {"id", "status", "result"}: the result names the release that ran the job

Redis is $RQ_REDIS_URL (the variable RQ's command line reads too), redis://127.0.0.1:6379/0 by
default; the queue is $JOBS_QUEUE, "jobs" by default.
"""

import json
import os
import re
from urllib.parse import parse_qs

from jobsvc import identity

REDIS_URL = "redis://127.0.0.1:6379/0"


def queue():
    """The RQ queue (imported here: the tests give a fake one)."""
    from redis import Redis
    from rq import Queue

    connection = Redis.from_url(os.environ.get("RQ_REDIS_URL", REDIS_URL))
    return Queue(os.environ.get("JOBS_QUEUE", "jobs"), connection=connection)


def fetch(job_id):
    """The job with this id, or None."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    try:
        return Job.fetch(job_id, connection=queue().connection)
    except NoSuchJobError:
        return None


def _answer(start_response, status, data, headers=(), head=False):
    body = (json.dumps(data, sort_keys=True) + "\n").encode("utf-8")
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
                   + list(headers))
    return [b"" if head else body]


def application(environ, start_response):
    path = environ.get("PATH_INFO", "").rstrip("/") or "/"
    method = environ.get("REQUEST_METHOD", "GET")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    head = method == "HEAD"
    if path == "/" and method in ("GET", "HEAD"):
        return _answer(start_response, "200 OK", dict(identity(), service="jobs"), head=head)
    if path == "/health" and method in ("GET", "HEAD"):
        return _answer(start_response, "200 OK", {"status": "ok", "service": "jobs"}, head=head)
    if path == "/jobs":
        if method != "POST":
            return _answer(start_response, "405 Method Not Allowed", {"error": "POST only"}, [("Allow", "POST")])
        word = (query.get("word") or ["hello"])[0]
        seconds = (query.get("seconds") or ["0"])[0]
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", word) or not re.fullmatch(r"[0-9]{1,2}(\.[0-9])?", seconds):
            return _answer(start_response, "400 Bad Request",
                           {"error": "word: 1 to 64 of A-Za-z0-9_-; seconds: a number below 100"})
        job = queue().enqueue("jobsvc.tasks.process", word, float(seconds))
        return _answer(start_response, "202 Accepted", {"id": job.id})
    match = re.fullmatch(r"/jobs/([A-Za-z0-9-]{1,64})", path)
    if match:
        if method not in ("GET", "HEAD"):
            return _answer(start_response, "405 Method Not Allowed", {"error": "GET only"}, [("Allow", "GET, HEAD")])
        job = fetch(match.group(1))
        if job is None:
            return _answer(start_response, "404 Not Found", {"error": "no such job"})
        status = job.get_status()
        status = getattr(status, "value", status)
        return _answer(start_response, "200 OK", {"id": job.id, "status": str(status),
                                                  "result": job.return_value() if status == "finished" else None},
                       head=head)
    return _answer(start_response, "404 Not Found", {"error": "no such path %s" % path})
