"""Redis Sentinel for the broker and the result backend, worker and beat, against real servers
started once for the module: one redis-server master, one replica and three redis-sentinel
processes (Debian's redis-sentinel), all with passwords, on free loopback ports. Sentinel
failover is made fast (down-after-milliseconds 1000, failover-timeout 2000).

Both sides use the same `sentinel://...;sentinel://...` URL list with
broker_transport_options / result_backend_transport_options (master_name, sentinel_kwargs with
the sentinels' password), as a Django project configures Celery.

The failover case (master kill -9 while acks_late tasks flow) records its tally through the
fault suite's ledger (tests/faults/harness.py), so it appears in docs/reliability.md.

Before sentinel support every test here failed: the worker and beat exited at start-up with
"unsupported broker/backend URL scheme 'sentinel'".
"""
import json
import os
import shutil
import sys
import time

import pytest

from conftest import REDIS_SERVER, RedisServer, require, wait_for
from test_redis_connections import PingedServer
from test_beat import beat_factory  # noqa: F401  (a fixture, used by name)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'faults'))
import harness  # noqa: E402

REDIS_SENTINEL = shutil.which('redis-sentinel') or (
    '/usr/bin/redis-sentinel' if os.path.exists('/usr/bin/redis-sentinel') else None)
MASTER = 'mymaster'
PASSWORD = 'Redis;s3cret@pw'      # the data servers' password (';' and '@' on purpose)
SENTINEL_PASSWORD = 'Sentinel-s3cret'
QUOTED_PASSWORD = 'Redis%3Bs3cret%40pw'


class DataServer(PingedServer):
    """redis-server with a password; a replica of `master_port` when given."""

    def __init__(self, workdir, master_port=None):
        super().__init__(workdir)
        self.master_port = master_port

    def _cmd(self):
        cmd = RedisServer._cmd(self) + ['--requirepass', PASSWORD, '--masterauth', PASSWORD]
        if self.master_port:
            cmd += ['--replicaof', '127.0.0.1', str(self.master_port)]
        return cmd

    def client(self, db=0, decode_responses=False):
        import redis
        c = redis.Redis(host=self.host, port=self.port, db=db, password=PASSWORD,
                        socket_timeout=5, decode_responses=decode_responses)
        self._clients.append(c)
        return c


class Sentinel(PingedServer):
    """One redis-sentinel process watching MASTER, with a password."""

    def __init__(self, workdir, master_port):
        super().__init__(workdir)
        self.conf = os.path.join(self.dir, 'sentinel.conf')  # sentinel rewrites it: its own copy
        with open(self.conf, 'w') as f:
            f.write('\n'.join([
                'port %d' % self.port, 'bind 127.0.0.1', 'protected-mode no', 'daemonize no',
                'dir %s' % self.dir, 'logfile %s' % self.logfile,
                'requirepass %s' % SENTINEL_PASSWORD,
                'sentinel sentinel-pass %s' % SENTINEL_PASSWORD,
                'sentinel monitor %s 127.0.0.1 %d 2' % (MASTER, master_port),
                'sentinel auth-pass %s %s' % (MASTER, PASSWORD),
                'sentinel down-after-milliseconds %s 1000' % MASTER,
                'sentinel failover-timeout %s 2000' % MASTER,
                'sentinel parallel-syncs %s 1' % MASTER, '']))

    def _cmd(self):
        return [REDIS_SENTINEL, self.conf]

    def client(self, db=0, decode_responses=True):
        import redis
        c = redis.Redis(host=self.host, port=self.port, password=SENTINEL_PASSWORD,
                        socket_timeout=2, decode_responses=decode_responses)
        self._clients.append(c)
        return c

    def master_port(self):
        import redis
        try:
            addr = self.client().execute_command('SENTINEL', 'get-master-addr-by-name', MASTER)
            return int(addr[1]) if addr else None
        except redis.exceptions.RedisError:
            return None

    def ready(self):
        """Knows the master, its replica and the two other sentinels (so it can fail over)."""
        import redis
        try:
            c = self.client()
            return (self.master_port() is not None
                    and len(c.execute_command('SENTINEL', 'replicas', MASTER)) == 1
                    and len(c.execute_command('SENTINEL', 'sentinels', MASTER)) == 2)
        except redis.exceptions.RedisError:
            return False


class SentinelCluster:
    """master + replica + 3 sentinels. url(db) is the sentinel URL list both sides use;
    client(db) a redis-py client of whichever server the sentinels call the master."""

    def __init__(self, tmp_path_factory):
        self.master = DataServer(tmp_path_factory.mktemp('redis-master')).start()
        self.replica = DataServer(tmp_path_factory.mktemp('redis-replica'),
                                  master_port=self.master.port).start()
        wait_for(lambda: self.replica.client().info('replication')['master_link_status'] == 'up',
                 20, message='the replica in sync')
        self.sentinels = [Sentinel(tmp_path_factory.mktemp('sentinel'), self.master.port).start()
                          for _ in range(3)]
        wait_for(lambda: all(s.ready() for s in self.sentinels), 30, interval=0.2,
                 message='three sentinels that know each other and the replica')

    def url(self, db=0):
        # kombu's form: ';'-separated, the first URL's password is the master's.
        return ';'.join('sentinel://:%s@127.0.0.1:%d/%d' % (QUOTED_PASSWORD, s.port, db)
                        for s in self.sentinels)

    @property
    def options(self):
        return {'master_name': MASTER, 'sentinel_kwargs': {'password': SENTINEL_PASSWORD}}

    def conf(self):
        """The Celery settings of both sides."""
        return {'broker_transport_options': self.options,
                'result_backend_transport_options': self.options}

    def client(self, db=0, decode_responses=False):
        from redis.sentinel import Sentinel as PySentinel
        s = PySentinel([('127.0.0.1', x.port) for x in self.sentinels],
                       sentinel_kwargs={'password': SENTINEL_PASSWORD})
        return s.master_for(MASTER, db=db, password=PASSWORD, socket_timeout=5,
                            decode_responses=decode_responses)

    def master_port(self):
        for s in self.sentinels:
            port = s.master_port()
            if port:
                return port
        return None

    @property
    def log(self):
        return '\n'.join(s.log for s in self.sentinels)

    def close(self):
        for s in self.sentinels:
            s.close()
        self.replica.close()
        self.master.close()


@pytest.fixture(scope='module')
def cluster(tmp_path_factory):
    require(REDIS_SERVER and os.access(REDIS_SERVER, os.X_OK), 'redis-server not found')
    require(REDIS_SENTINEL and os.access(REDIS_SENTINEL, os.X_OK),
            'redis-sentinel not found (apt-get install redis-sentinel, or make deps)')
    c = SentinelCluster(tmp_path_factory)
    yield c
    c.close()


@pytest.fixture
def redis_server(cluster):
    """conftest's worker_factory, celery_app_factory and beat_factory use the sentinel URLs."""
    return cluster


def no_password(log):
    return PASSWORD not in log and QUOTED_PASSWORD not in log and SENTINEL_PASSWORD not in log


def test_worker_round_trip_through_sentinel(cluster, worker_factory, celery_app_factory):
    """Tasks sent by Celery through the sentinels run on our worker, which finds the master
    through the sentinels too; .get() reads the results through them."""
    w = worker_factory(settings=cluster.conf(), args=['-c', '2'], ready_timeout=20)
    app = celery_app_factory(conf=cluster.conf())
    assert app.diag.add.delay(2, 3).get(timeout=20) == 5
    assert app.diag.echo.delay('sentinel').get(timeout=20)['args'] == ['sentinel']
    assert cluster.master.client(1).keys('celery-task-meta-*')
    assert no_password(w.log), w.log


def test_beat_publishes_through_sentinel(cluster, worker_factory, beat_factory):  # noqa: F811
    """beat finds the master through the sentinels and sends its entry; the worker runs it and
    stores the result there."""
    w = worker_factory(settings=cluster.conf(), args=['-Q', 'tick-sentinel'], ready_timeout=20)
    beat = beat_factory(celery=dict(cluster.conf(), beat_schedule={
        'tick': {'task': 'cvtasks.diagnostics.add', 'schedule': 1.0, 'args': [20, 22],
                 'options': {'queue': 'tick-sentinel'}}}))
    wait_for(lambda: harness.FINISHED_RE.search(w.log), 20, message='a tick run by the worker')
    task_id = harness.FINISHED_RE.search(w.log).group(1)
    stored = json.loads(cluster.client(1).get('celery-task-meta-' + task_id))
    assert (stored['status'], stored['result']) == ('SUCCESS', 42)
    assert no_password(beat.log), beat.log


def _retrying(call, timeout=30):
    """call() retried over the client's own failover window (redis-py and kombu raise once per
    broken connection before they ask the sentinels again)."""
    import kombu.exceptions
    import redis
    deadline = time.time() + timeout
    while True:
        try:
            return call()
        except (redis.exceptions.RedisError, kombu.exceptions.OperationalError):
            if time.time() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.timeout(150)
def test_master_kill9_under_acks_late_load_fails_over(cluster, worker_factory,
                                                     celery_app_factory):
    """The master is kill -9ed while acks_late tasks run: the sentinels promote the replica, the
    worker finds it through them and goes on. Every task completes; a task runs twice only if
    its ack was not yet acknowledged by the new master (at-least-once), so duplicates are
    bounded by the prefetch window. Tasks sent after the failover run too."""
    conf = dict(cluster.conf(), task_acks_late=True, worker_prefetch_multiplier=2)
    conf['broker_transport_options'] = dict(cluster.options, visibility_timeout=5)
    w = worker_factory(settings=conf, args=['-c', '2'], ready_timeout=20,
                       sections={'cvtasks': {'restore_interval': 0.5}})
    app = celery_app_factory(conf=conf)
    rc1 = cluster.client(1)
    ledger = harness.Ledger()
    for _ in range(60):
        ledger.send(app.diag.sleep.delay(0.1))
    old_port = cluster.master.port
    wait_for(lambda: len(harness.FINISHED_RE.findall(w.log)) >= 10, 30, message='10 tasks done')
    cluster.master.kill()
    killed_at = time.time()
    wait_for(lambda: cluster.master_port() not in (None, old_port), 30, interval=0.1,
             message='the sentinels promoting the replica')
    failover_s = time.time() - killed_at
    for _ in range(20):
        ledger.send(_retrying(lambda: app.diag.sleep.delay(0.1)))
    wait_for(lambda: _retrying(lambda: ledger.done(rc1)), 90, interval=0.3,
             message='every task completed')
    tally = _retrying(lambda: ledger.tally(rc1, [w]))
    rec = harness.write_record(
        'Redis master kill -9 under Sentinel, acks_late',
        'master, replica and 3 redis-sentinel; 60 × sleep(0.1) acks_late on -c 2 '
        '(prefetch 4), master kill -9 after 10 finished; 20 more sent after the failover '
        '(replica promoted %.1f s after the kill)' % failover_s,
        tally,
        'The worker lost its connections, asked the sentinels again (get-master-addr-by-name, '
        'then ROLE) until they named the promoted replica, and went on. Messages it held stayed '
        'in `unacked` on the replica; results and acks waited in memory and went to the new '
        'master. Replication is asynchronous: an ack the old master took in its last moment '
        'dies with it and that message runs again after the visibility timeout (at-least-once), '
        'at most the prefetch window (4).',
        allowed_lost=0, allowed_duplicates=4,
        extra={'failover_s': round(failover_s, 1)})
    harness.assert_ok(rec, tally)
    assert 'the sentinels now name 127.0.0.1:%d as the master' % cluster.replica.port in w.log, \
        w.log
    assert no_password(w.log), w.log
