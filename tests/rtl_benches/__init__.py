"""cocotb benches of the rtl blocks (run from tests/test_rtl.py through cocotb_tools.runner)."""
