"""pdftasks registers its tasks on its own apps only (unit test, in a fresh interpreter:
Celery's shared-task registry is process-wide, so a leak would also reach other tests)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import json
    from celery import Celery

    host = Celery("host", broker="redis://127.0.0.1:1/0", backend="redis://127.0.0.1:1/0")

    @host.task(name="host.add")
    def add(x, y):
        return x + y

    import pdftasks
    from pdftasks.settings import Settings

    apps = [pdftasks.create_app(Settings(broker_url="redis://127.0.0.1:1/0", home=home,
                                         webhook_max_retries=n))
            for home, n in ((HOME + "/a", 1), (HOME + "/b", 7))]
    for app in apps:
        app.finalize()
    host.finalize()
    fresh = Celery("fresh", broker="redis://127.0.0.1:1/0")
    fresh.finalize()
    print(json.dumps({
        "host": sorted(n for n in host.tasks if not n.startswith("celery.")),
        "fresh": sorted(n for n in fresh.tasks if n.startswith("pdftasks.")),
        "retries": [app.tasks["pdftasks.deliver_webhook"].max_retries for app in apps],
    }))
""")


def test_tasks_stay_on_pdftasks_apps_with_their_own_settings(tmp_path) -> None:
    out = subprocess.run([sys.executable, "-c", f"HOME = {str(tmp_path)!r}\n" + SCRIPT],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["host"] == ["host.add"]
    assert seen["fresh"] == []
    assert seen["retries"] == [1, 7]
    assert list(tmp_path.iterdir()) == [], "files written without a job"


def test_a_host_that_builds_the_api_keeps_its_garbage_collector(tmp_path) -> None:
    # pdftasks.api:app (served alone by `pdftasks api`) freezes what is loaded at startup;
    # build_api() in a host's process does not touch the host's collector.
    script = textwrap.dedent(f"""
        import gc, json
        from fastapi.testclient import TestClient
        from pdftasks.api import build_api
        from pdftasks.settings import Settings

        s = Settings(broker_url="redis://127.0.0.1:1/0", home={str(tmp_path)!r})
        counts = []
        for freeze in (False, True):
            gc.unfreeze()
            with TestClient(build_api(s, freeze_gc=freeze)):
                counts.append(gc.get_freeze_count())
        print(json.dumps(counts))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    host, served = json.loads(out.stdout.strip().splitlines()[-1])
    assert host == 0 and served > 1000
