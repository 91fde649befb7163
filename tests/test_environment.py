"""The installed stack works offline: a working torchvision pair, no route out."""

from __future__ import annotations

import os
import socket

import pytest
import torch


def test_torchvision_nms_works_with_the_installed_torch():
    import torchvision

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [20.0, 20.0, 30.0, 30.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    keep = torchvision.ops.nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]


def test_connections_beyond_loopback_fail():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(2)
    with pytest.raises(OSError):
        sock.connect(("93.184.216.34", 80))
    sock.close()


def test_loopback_still_works():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.socket()
    client.connect(server.getsockname())
    client.close()
    server.close()


@pytest.mark.skipif(os.environ.get("ABLATE_NETNS") != "1", reason="only inside the CI network namespace")
def test_only_loopback_interface_exists_in_ci():
    assert [name for _, name in socket.if_nameindex()] == ["lo"]
