"""The benchmark script runs (a smoke test at batch 2, one round): every variant, the same
parameter count, and memory saving visible in its peak bytes."""

import os
import re
import subprocess
import sys


def test_benchmark_smoke(tmp_path):
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench", "benchmark.py")
    output = tmp_path / "bench.md"
    result = subprocess.run([sys.executable, script, "--batch", "2", "--rounds", "1", "--threads", "1",
                             "--output", str(output)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = dict(re.findall(r"^\| (plain|checkpoint|recompute|fused|C\+\+ fused|resnet\.py) \|.*\| ([0-9.]+) \|$",
                           result.stdout, flags=re.M))
    assert set(rows) == {"plain", "checkpoint", "recompute", "fused", "C++ fused", "resnet.py"}, result.stdout
    assert float(rows["fused"]) < float(rows["plain"])
    assert "1854890 parameters" in result.stdout
    assert "Python F and G called from C++" in result.stdout
    # memcnn.models.resnet's RevNet-110 (MemCNN's model code) holds the C++-built network's activations
    assert float(rows["resnet.py"]) == float(rows["C++ fused"]) < float(rows["plain"])
    assert "memcnn.models.resnet's RevNet-110 vs the same network built in C++" in result.stdout
    assert "| fused |" in output.read_text()
