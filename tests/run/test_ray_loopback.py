"""A local Ray listens on loopback only, even when the caller imported Ray first.

Ray reads ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` once, at import; without it, a local Ray
takes the machine's routable address and its servers listen on every interface. A
notebook that runs ``import ray`` before ``ablate.run_study`` is that case.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ablate.errors import ConfigError
from ablate.run.ray_tune import refuse_routable_local_ray


@pytest.mark.parametrize("advertised", ["127.0.0.1", "127.0.1.1", "::1", "localhost"])
def test_a_loopback_address_is_allowed(advertised):
    refuse_routable_local_ray(advertised)


@pytest.mark.parametrize("advertised", ["192.0.2.2", "10.0.0.7", "2001:db8::1", "0.0.0.0"])
def test_a_routable_address_is_refused_with_what_to_do(advertised):
    with pytest.raises(ConfigError) as err:
        refuse_routable_local_ray(advertised)
    line = str(err.value)
    assert "\n" not in line
    assert advertised in line and "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0" in line and "before `import ray`" in line


_IMPORT_RAY_FIRST = """
import json, os, sys
import psutil
import ray
from ablate.errors import ConfigError
from ablate.run import ray_session

advertised = ray.util.get_node_ip_address()
try:
    with ray_session(num_cpus=1):
        family = {os.getpid()} | {p.pid for p in psutil.Process().children(recursive=True)}
        listening = sorted({c.laddr.ip for c in psutil.net_connections(kind="inet")
                            if c.status == psutil.CONN_LISTEN and c.pid in family})
        print(json.dumps({"advertised": advertised, "node": ray.util.get_node_ip_address(), "listening": listening}))
except ConfigError as err:
    print(json.dumps({"advertised": advertised, "refused": str(err),
                      "children": len(psutil.Process().children(recursive=True))}))
"""


def test_importing_ray_first_never_gives_a_local_ray_beyond_loopback(tmp_path):
    """Either the session is on loopback (a machine with only loopback, as in CI's network
    namespace), or it is refused before any Ray process starts."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    done = subprocess.run([sys.executable, "-c", _IMPORT_RAY_FIRST], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    loopback = ("127.0.0.1", "::1", "::ffff:127.0.0.1")
    if got["advertised"] in loopback:
        assert got["node"] == "127.0.0.1"
        assert got["listening"] and all(ip in loopback for ip in got["listening"]), got
    else:
        assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0" in got["refused"], got
        assert got["children"] == 0, got
