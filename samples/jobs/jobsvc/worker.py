"""The worker class RQ starts with (``rq worker --worker-class jobsvc.worker.Worker``): RQ
imports it at start, so a release whose worker cannot start shows here first."""

from rq import Worker as _Worker

from jobsvc import identity


class Worker(_Worker):
    def work(self, *args, **kwargs):
        self.log.info("jobs worker of release %(release)s (version %(version)s) starts", identity())
        return super().work(*args, **kwargs)
