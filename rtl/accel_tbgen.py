"""A self-checking Verilog bench of the whole accelerator (rtl.Accelerator), for the take-away
folder (rtl/package.py).

Per image the bench streams the image's input event words through the AXI4-Stream port (one
beat per cycle, ``tlast`` on the last), pulses ``start`` and waits for ``done``, then reads
back and checks, as the cocotb bench (rtl/accel_bench.py) does: every buffered layer's events
through the debug port against golden ``int`` (neuron and phase, each neuron at most once, as
many events as golden's spikes; the input layer's buffer against the words sent), the output
potentials (``pot_addr`` → ``pot_data``) and the class (``result_class`` and the class
register) against golden's, each engine's cycles and the controller's total (register block)
against hwsim's layer mode, each engine's activity counters summed over the images against
hwsim's counts, and the status register (done, no buffer overflowed). The
expected values come from hex files (``$readmemh``, read from the simulator's working folder)
that :func:`stimulus_files` writes from the case of :func:`rtl.accel_sim.accel_case`. Needs
no Python: ``iverilog -g2012`` and ``vvp`` run it; a mismatch prints the layer, image, neuron
and phase, and the run ends in ``$fatal`` (exit status 1), else it prints ``PASS``.
"""

from __future__ import annotations

from rtl.tbgen import NO_SPIKE, PERIOD_NS, _lines


def stimulus_files(case: dict) -> dict[str, str]:
    """The hex files of an accelerator case (:func:`rtl.accel_sim.accel_case`): name → text.

    ``accel_input.hex`` (every image's input event words, one after the other; ``0`` alone
    if there are none) and ``accel_input_count.hex`` (words per image); ``accel_cycles.hex``
    (per image hwsim's image latency, then each engine's cycles in run order);
    ``accel_potentials.hex`` (per image the output layer's A-bit two's complement potentials,
    neuron order) and ``accel_class.hex``; ``accel_counts.hex`` (per engine in run order,
    hwsim's activity counts over the images, 64-bit, in :func:`_counters` order); per
    buffered layer i but the input, ``accel_layer<i>_phases.hex`` (per image and neuron
    golden's phase, ``ff`` for none)."""
    images, bits = case["images"], case["output"]["potential_bits"]
    words = [w for im in images for w in im["input"]] or [0]
    cycles = []
    for im in images:
        cycles += [im["hwsim_total_cycles"], *(im["hwsim_cycles"][str(i)] for i in _engines(case))]
    files = {
        "accel_input.hex": _lines(words, 8),
        "accel_input_count.hex": _lines([len(im["input"]) for im in images], 8),
        "accel_cycles.hex": _lines(cycles, 8),
        "accel_potentials.hex": _lines(
            [v & ((1 << bits) - 1) for im in images for v in im["potentials"]], -(-bits // 4)
        ),
        "accel_class.hex": _lines([im["argmax"] for im in images], 8),
        "accel_counts.hex": _lines(
            [case["hwsim_counts"][str(i)][k] for i in _engines(case) for k in _counters(case)],
            16,
        ),
    }
    for i in _spiking(case):
        phases = [NO_SPIKE if p < 0 else p for im in images for p in im["phases"][str(i)]]
        files[f"accel_layer{i}_phases.hex"] = _lines(phases, 2)
    return files


def _engines(case: dict) -> list[int]:
    """The layers with an engine (every layer but the input), in run order."""
    return [lay["index"] for lay in case["layers"] if lay["kind"] != "input"]


def _counters(case: dict) -> list[str]:
    """The activity counters the case gives hwsim's counts of (the same for every engine)."""
    return list(next(iter(case["hwsim_counts"].values())))


def _spiking(case: dict) -> list[int]:
    """The buffered layers whose buffer holds an engine's spikes (not the input's)."""
    return [lay["index"] for lay in case["layers"] if lay["buffered"] and lay["kind"] != "input"]


def testbench(tb: str, top: str, case: dict, widths: dict[str, int]) -> str:
    """Verilog of bench module ``tb`` around the accelerator module ``top``; ``widths``: the
    width of each of its ports (``pot_addr``, ``pot_data``, ``result_class``, …)."""
    regs = case["registers"]  # name → word address
    out, images = case["output"], case["images"]
    n_images, engines = len(images), _engines(case)
    names = {lay["index"]: f"{lay['index']} ({lay['name']})" for lay in case["layers"]}
    neurons = {i: len(images[0]["phases"][str(i)]) for i in _spiking(case)}
    per_image = [2 * im["hwsim_total_cycles"] + 2 * len(im["input"]) + 2 * sum(neurons.values())
                 + out["rows"] + 200 for im in images]  # fmt: skip
    decl = [f"    reg [7:0] l{i}_phases [0:{n_images * k - 1}];\n    reg l{i}_seen [0:{k - 1}];"
            for i, k in neurons.items()]  # fmt: skip
    load = [f'        $readmemh("accel_layer{i}_phases.hex", l{i}_phases);' for i in neurons]
    input_layer = next(lay["index"] for lay in case["layers"] if lay["kind"] == "input")
    checks = [INPUT_CHECK.format(i=input_layer, name=names[input_layer])]
    checks += [SPIKE_CHECK.format(i=i, name=names[i], neurons=k, no_spike=NO_SPIKE)
               for i, k in neurons.items()]  # fmt: skip
    cycle_checks = [CYCLE_CHECK.format(j=j + 1, addr=regs[f"cycles@{i}"], name=names[i],
                                       stride=len(engines) + 1)
                    for j, i in enumerate(engines)]  # fmt: skip
    counters = _counters(case)
    slots = [(j * len(counters) + c, i, k) for j, i in enumerate(engines)
             for c, k in enumerate(counters)]  # fmt: skip
    count_reads = [COUNT_READ.format(slot=q, addr=regs[f"{k}@{i}"]) for q, i, k in slots]
    count_checks = [COUNT_CHECK.format(slot=q, name=names[i], what=k) for q, i, k in slots]
    fmt = dict(
        tb=tb, top=top, half=PERIOD_NS // 2, timeout=PERIOD_NS * sum(per_image),
        n_images=n_images, n_words=max(sum(len(im["input"]) for im in images), 1),
        n_cycles=n_images * (len(engines) + 1), stride=len(engines) + 1,
        n_out=out["n_out"], bits=out["potential_bits"], lanes=out["lanes"],
        pixels=out["pixels"], cb=out["channel_blocks"], rows=out["rows"],
        w_pot_addr=widths["pot_addr"], w_pot_data=widths["pot_data"],
        w_class=widths["result_class"], reg_status=regs["status"], reg_class=regs["class"],
        reg_cycles=regs["cycles"], layer_memories="\n".join(decl), load="\n".join(load),
        layer_checks="".join(checks), cycle_checks="".join(cycle_checks),
        n_counts=len(slots), count_reads="".join(count_reads),
        count_checks="".join(count_checks),
    )  # fmt: skip
    return TB_TEMPLATE.format(**fmt)


TB_TEMPLATE = """// Generated by one-spike (rtl/accel_tbgen.py): the accelerator, self-checked.
`timescale 1ns / 1ps
module {tb};
    reg clk = 0;
    always #{half} clk = ~clk;
    reg rst = 1, start = 0, s_axis_tvalid = 0, s_axis_tlast = 0;
    reg [31:0] s_axis_tdata = 0;
    reg [{w_pot_addr} - 1:0] pot_addr = 0;
    reg [7:0] dbg_layer = 0;
    reg [19:0] dbg_addr = 0;
    reg [15:0] reg_addr = 0;
    wire busy, done, s_axis_tready;
    wire [{w_class} - 1:0] result_class;
    wire [{w_pot_data} - 1:0] pot_data;
    wire [31:0] dbg_data, dbg_count, reg_data;
    {top} dut (
        .clk(clk), .rst(rst), .start(start), .busy(busy), .done(done),
        .s_axis_tdata(s_axis_tdata), .s_axis_tvalid(s_axis_tvalid),
        .s_axis_tlast(s_axis_tlast), .s_axis_tready(s_axis_tready),
        .result_class(result_class), .pot_addr(pot_addr), .pot_data(pot_data),
        .dbg_layer(dbg_layer), .dbg_addr(dbg_addr), .dbg_data(dbg_data), .dbg_count(dbg_count),
        .reg_addr(reg_addr), .reg_data(reg_data)
    );

    // the stimulus and golden int's / hwsim's values (tb/stim/accel_*.hex)
    reg [31:0] input_words [0:{n_words} - 1];
    reg [31:0] input_count [0:{n_images} - 1];
    reg [31:0] want_cycles [0:{n_cycles} - 1];
    reg [{bits} - 1:0] want_pots [0:{n_images} * {n_out} - 1];
    reg [31:0] want_class [0:{n_images} - 1];
    reg [63:0] want_counts [0:{n_counts} - 1];
    reg [63:0] got_counts [0:{n_counts} - 1];
{layer_memories}
    integer errors = 0;

    initial begin
        #{timeout};
        $fatal(1, "timeout: the accelerator never finished");
    end

    // a register through the register block (registered read: the word one cycle later)
    task read_reg(input [15:0] addr, output [31:0] value);
        begin
            @(negedge clk) reg_addr = addr;
            @(negedge clk) value = reg_data;
        end
    endtask

    initial begin : driver
        integer n, k, j, r, e, count, want;
        reg [31:0] w, v;
        $readmemh("accel_input.hex", input_words);
        $readmemh("accel_input_count.hex", input_count);
        $readmemh("accel_cycles.hex", want_cycles);
        $readmemh("accel_potentials.hex", want_pots);
        $readmemh("accel_class.hex", want_class);
        $readmemh("accel_counts.hex", want_counts);
        for (k = 0; k < {n_counts}; k = k + 1) got_counts[k] = 0;
{load}
        repeat (2) @(posedge clk);
        @(negedge clk) rst = 0;
        e = 0;
        for (n = 0; n < {n_images}; n = n + 1) begin
            // the input events through the AXI4-Stream port, one beat per cycle
            // (a beat offered at a falling edge is taken at the next rising edge if tready
            // is high then; tready is read once the inputs have settled)
            @(negedge clk);
            for (k = 0; k < input_count[n]; k = k + 1) begin
                s_axis_tdata = input_words[e + k];
                s_axis_tvalid = 1;
                s_axis_tlast = k == input_count[n] - 1;
                #1;
                while (!s_axis_tready) begin
                    @(negedge clk);
                    #1;
                end
                @(negedge clk);
            end
            s_axis_tvalid = 0;
            s_axis_tlast = 0;
            start = 1;
            @(negedge clk) start = 0;
            @(posedge done);
{layer_checks}
            // the output potentials (rows of P lanes: pixel, then channel block)
            for (r = 0; r < {rows}; r = r + 1) begin
                @(negedge clk) pot_addr = r;
                @(posedge clk) #1;  // a registered read: the row comes out after the edge
                for (k = 0; k < {lanes}; k = k + 1) begin
                    j = ((r % {cb}) * {lanes} + k) * {pixels} + r / {cb};
                    if ((r % {cb}) * {lanes} + k < {n_out} / {pixels}
                        && pot_data[k * {bits} +: {bits}] != want_pots[n * {n_out} + j]) begin
                        errors = errors + 1;
                        $display("image %0d: output potential %0d differs from golden", n, j);
                    end
                end
            end
            if (result_class != want_class[n]) begin
                errors = errors + 1;
                $display("image %0d: class %0d, golden %0d", n, result_class, want_class[n]);
            end
            read_reg({reg_class}, v);
            if (v != want_class[n]) begin
                errors = errors + 1;
                $display("image %0d: class register %0d, golden %0d", n, v, want_class[n]);
            end
            read_reg({reg_status}, v);
            if (v[2] || !v[1]) begin
                errors = errors + 1;
                $display("image %0d: status %0d (bit 1 done, bit 2 a buffer overflowed)", n, v);
            end
            // cycles: the controller's total and each engine's, against hwsim's layer mode
            read_reg({reg_cycles}, v);
            if (v != want_cycles[n * {stride}]) begin
                errors = errors + 1;
                $display("image %0d: the controller counted %0d cycles, hwsim %0d", n, v,
                         want_cycles[n * {stride}]);
            end
{cycle_checks}            // the engines' activity counters, summed over the images
{count_reads}            e = e + input_count[n];
            $display("image %0d: class %0d, %0d mismatches so far", n, result_class, errors);
        end
        // against hwsim's counts over the images
{count_checks}        if (errors != 0) $fatal(1, "FAIL: %0d mismatches", errors);
        $display({{"PASS: every layer matches golden int and hwsim's cycles and counts ",
                  "({n_images} images)"}});
        $finish;
    end
endmodule
"""

INPUT_CHECK = """            // layer {name}: its buffer holds the words sent
            @(negedge clk) begin
                dbg_layer = {i};
                dbg_addr = 0;
            end
            #1 count = dbg_count;
            if (count != input_count[n]) begin
                errors = errors + 1;
                $display("layer {name} image %0d: %0d words in its buffer, %0d sent", n, count,
                         input_count[n]);
            end
            for (k = 0; k < count && k < input_count[n]; k = k + 1) begin
                @(negedge clk) w = dbg_data;
                dbg_addr = k + 1;
                if (w != input_words[e + k]) begin
                    errors = errors + 1;
                    $display("layer {name} image %0d: buffered word %0d differs from the input",
                             n, k);
                end
            end
"""

SPIKE_CHECK = """            // layer {name}: each buffered event: a neuron's golden phase, once
            @(negedge clk) begin
                dbg_layer = {i};
                dbg_addr = 0;
            end
            #1 count = dbg_count;
            want = 0;
            for (k = 0; k < {neurons}; k = k + 1) begin
                l{i}_seen[k] = 0;
                if (l{i}_phases[n * {neurons} + k] != {no_spike}) want = want + 1;
            end
            if (count != want) begin
                errors = errors + 1;
                $display("layer {name} image %0d: %0d events, golden %0d spikes", n, count, want);
            end
            for (k = 0; k < count; k = k + 1) begin
                @(negedge clk) w = dbg_data;
                dbg_addr = k + 1;
                j = w[19:0];
                if (j >= {neurons} || l{i}_phases[n * {neurons} + j] != w[25:20]) begin
                    errors = errors + 1;
                    $display({{"layer {name} image %0d: first difference at neuron %0d phase ",
                              "%0d (golden phase, ff: none: %0h)"}}, n, j, w[25:20],
                             l{i}_phases[n * {neurons} + j]);
                end else if (l{i}_seen[j]) begin
                    errors = errors + 1;
                    $display("layer {name} image %0d: neuron %0d spiked twice", n, j);
                end
                if (j < {neurons}) l{i}_seen[j] = 1;
            end
"""

CYCLE_CHECK = """            read_reg({addr}, v);
            if (v != want_cycles[n * {stride} + {j}]) begin
                errors = errors + 1;
                $display("layer {name} image %0d: %0d RTL cycles, hwsim %0d", n, v,
                         want_cycles[n * {stride} + {j}]);
            end
"""

COUNT_READ = """            read_reg({addr}, v);
            got_counts[{slot}] = got_counts[{slot}] + v;
"""

COUNT_CHECK = """        if (got_counts[{slot}] != want_counts[{slot}]) begin
            errors = errors + 1;
            $display("layer {name}: counter {what}: RTL %0d, hwsim %0d (over the images)",
                     got_counts[{slot}], want_counts[{slot}]);
        end
"""
