"""The plugin's whole test: every named contract check of osad-bench, one test each."""
import bench_plugin_template.method  # noqa: F401  (registers "tinycnn")
from bench.contract import parametrize_with_checks


@parametrize_with_checks(["tinycnn"])
def test_contract(method, check):
    check(method)
