"""archspec: the reference accelerator's specification, read by both simulators.

hwsim (the cycle-level model) and rtl (the Verilog generator) implement the same machine; what
they must agree on lives here, owned by neither (issue 9 §3):

- ``archspec.config``: ``ArchConfig`` (lanes, queues, memories, dataflow, clock, technology) and
  ``EnergyTable`` (Horowitz 45 nm logic figures), the shipped presets in ``configs/*.toml``;
- ``archspec.fanout``: the fan-out tables that address a synapse group's potentials per event;
- ``archspec.tiles``: the output-stationary tile shapes per layer (docs/architecture.md §11);
- ``archspec.memcost``: SRAM energy, leakage and area by size and width from the committed CACTI
  7.0 table ``configs/cacti_45nm.csv``.
"""

from archspec.config import ACTIONS, DATAFLOWS, MEMORY_MODELS, ArchConfig, EnergyTable

__all__ = ["ACTIONS", "ArchConfig", "DATAFLOWS", "EnergyTable", "MEMORY_MODELS"]
