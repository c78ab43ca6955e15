// tb_axi_top: the board wrapper flipq_axi_top (with tests/rtl/fake_accel.v as flipq_accel) driven
// the way flipq.host.pynq_backend drives the board: AXI-lite writes of planes, n_samples and
// ap_start, then the DMA's MM2S stream in and S2MM stream out, then ap_ctrl polled. Checked
// (tests/test_rtl_axi_top.py): every output word, TLAST on the last word of each run only, the
// exact number of input words admitted, ap_start/ap_done/ap_idle/ap_ready as ap_ctrl_hs reports
// them, the interrupt registers, a second run after the first, n_samples = 0, and planes held
// through a run while the register is rewritten.
//
// Bus drivers are clocked processes (reading pre-edge values, as the DUT does); the sequence in
// the initial block only acts at falling edges, so the two never race. Random input gaps and
// output stalls come from a seeded xorshift, so a failing seed repeats.
`timescale 1ns/1ps
`default_nettype none

module tb_axi_top #(
    parameter integer WORD = 32,
    parameter integer IN_WORDS = 1,
    parameter integer OUT_WORDS = 1,
    parameter integer SEED = 1,
    parameter integer GAP = 64,     // of 256: MM2S offers no word this cycle
    parameter integer STALL = 96    // of 256: S2MM drops TREADY this cycle
);
    localparam integer NIN = 512;
    localparam integer NOUT = 512;
    localparam [WORD/8-1:0] ALL_BYTES = {(WORD/8){1'b1}};

    reg clk = 1'b0;
    always #5 clk = ~clk;
    reg rst_n = 1'b0;
    integer cyc = 0;
    always @(posedge clk) begin
        cyc <= cyc + 1;
        if (cyc > 400000) $fatal(1, "tb_axi_top: FAIL: timeout at cycle %0d", cyc);
    end

    reg [31:0] rng = SEED;
    wire [31:0] rng1 = rng ^ (rng << 13);
    wire [31:0] rng2 = rng1 ^ (rng1 >> 17);
    always @(posedge clk) rng <= rng2 ^ (rng2 << 5);

    integer errors = 0;

    // ---- the DUT
    reg  [4:0]  awaddr, araddr;
    reg         awvalid, wvalid, bready, arvalid, rready;
    reg  [31:0] wdata;
    reg  [3:0]  wstrb;
    wire        awready, wready, bvalid, arready, rvalid;
    wire [1:0]  bresp, rresp;
    wire [31:0] rdata;
    reg  [WORD-1:0] in_data;
    reg             in_valid, in_last;
    wire            in_ready;
    wire [WORD-1:0] out_data;
    wire [WORD/8-1:0] out_keep, out_strb;
    wire            out_valid, out_last;
    reg             out_ready;
    wire            irq;

    flipq_axi_top #(.WORD(WORD), .IN_WORDS(IN_WORDS), .OUT_WORDS(OUT_WORDS)) dut (
        .ap_clk(clk), .ap_rst_n(rst_n),
        .s_axi_control_AWADDR(awaddr), .s_axi_control_AWVALID(awvalid), .s_axi_control_AWREADY(awready),
        .s_axi_control_WDATA(wdata), .s_axi_control_WSTRB(wstrb), .s_axi_control_WVALID(wvalid),
        .s_axi_control_WREADY(wready), .s_axi_control_BRESP(bresp), .s_axi_control_BVALID(bvalid),
        .s_axi_control_BREADY(bready), .s_axi_control_ARADDR(araddr), .s_axi_control_ARVALID(arvalid),
        .s_axi_control_ARREADY(arready), .s_axi_control_RDATA(rdata), .s_axi_control_RRESP(rresp),
        .s_axi_control_RVALID(rvalid), .s_axi_control_RREADY(rready),
        .in_r_TDATA(in_data), .in_r_TKEEP(ALL_BYTES), .in_r_TSTRB(ALL_BYTES), .in_r_TVALID(in_valid),
        .in_r_TREADY(in_ready), .in_r_TLAST(in_last),
        .out_r_TDATA(out_data), .out_r_TKEEP(out_keep), .out_r_TSTRB(out_strb), .out_r_TVALID(out_valid),
        .out_r_TREADY(out_ready), .out_r_TLAST(out_last),
        .interrupt(irq)
    );

    // ---- AXI-lite master: AW and W each raised after a random 0..3 cycles (either may lead),
    // BREADY/RREADY random, one transaction per command from the sequence.
    localparam [2:0] L_IDLE = 3'd0, L_WRITE = 3'd1, L_BRESP = 3'd2, L_READ = 3'd3, L_RDATA = 3'd4;
    reg [2:0]  lstate;
    reg        cmd_go = 1'b0, cmd_seen, cmd_wr = 1'b0;
    reg [4:0]  cmd_addr = 5'd0;
    reg [31:0] cmd_data = 32'd0;
    reg [3:0]  cmd_strb = 4'hF;
    reg        aw_done, w_done;
    reg [1:0]  aw_wait, w_wait;
    reg [31:0] lite_rdata;
    integer    lite_count;

    always @(posedge clk) begin
        if (!rst_n) begin
            lstate <= L_IDLE;
            awvalid <= 1'b0; wvalid <= 1'b0; bready <= 1'b0; arvalid <= 1'b0; rready <= 1'b0;
            awaddr <= 5'd0; araddr <= 5'd0; wdata <= 32'd0; wstrb <= 4'd0;
            cmd_seen <= 1'b0;
            lite_count <= 0;
            lite_rdata <= 32'd0;
        end else begin
            case (lstate)
                L_IDLE: if (cmd_go != cmd_seen) begin
                    cmd_seen <= cmd_go;
                    aw_done <= 1'b0; w_done <= 1'b0;
                    aw_wait <= rng[1:0]; w_wait <= rng[3:2];
                    awaddr <= cmd_addr; araddr <= cmd_addr; wdata <= cmd_data; wstrb <= cmd_strb;
                    lstate <= cmd_wr ? L_WRITE : L_READ;
                end
                L_WRITE: begin
                    if (!aw_done) begin
                        if (awvalid && awready) begin awvalid <= 1'b0; aw_done <= 1'b1; end
                        else if (aw_wait == 0) awvalid <= 1'b1;
                        else aw_wait <= aw_wait - 1;
                    end
                    if (!w_done) begin
                        if (wvalid && wready) begin wvalid <= 1'b0; w_done <= 1'b1; end
                        else if (w_wait == 0) wvalid <= 1'b1;
                        else w_wait <= w_wait - 1;
                    end
                    if ((aw_done || (awvalid && awready)) && (w_done || (wvalid && wready))) lstate <= L_BRESP;
                end
                L_BRESP: begin
                    bready <= rng[4];
                    if (bvalid && bready) begin
                        if (bresp != 2'b00) begin
                            $display("tb_axi_top: FAIL: BRESP %0d writing 0x%02h", bresp, awaddr);
                            errors = errors + 1;
                        end
                        bready <= 1'b0;
                        lite_count <= lite_count + 1;
                        lstate <= L_IDLE;
                    end
                end
                L_READ: begin
                    if (arvalid && arready) begin arvalid <= 1'b0; lstate <= L_RDATA; end
                    else if (aw_wait == 0) arvalid <= 1'b1;
                    else aw_wait <= aw_wait - 1;
                end
                default: begin
                    rready <= rng[5];
                    if (rvalid && rready) begin
                        if (rresp != 2'b00) begin
                            $display("tb_axi_top: FAIL: RRESP %0d reading 0x%02h", rresp, araddr);
                            errors = errors + 1;
                        end
                        lite_rdata <= rdata;
                        rready <= 1'b0;
                        lite_count <= lite_count + 1;
                        lstate <= L_IDLE;
                    end
                end
            endcase
        end
    end

    // ---- MM2S: offers in_mem[src_idx..src_end-1] with random gaps, TLAST on word src_end-1 as
    // the DMA marks the end of its transfer; holds a word until it moves.
    reg [WORD-1:0] in_mem [0:NIN-1];
    integer src_idx, src_end = 0, nxt;
    always @(posedge clk) begin
        if (!rst_n) begin
            src_idx <= 0;
            in_valid <= 1'b0; in_last <= 1'b0; in_data <= {WORD{1'b0}};
        end else begin
            nxt = src_idx;
            if (in_valid && in_ready) nxt = src_idx + 1;
            src_idx <= nxt;
            if (!in_valid || in_ready) begin
                if (nxt < src_end && rng[15:8] >= GAP) begin
                    in_valid <= 1'b1;
                    in_data <= in_mem[nxt];
                    in_last <= (nxt == src_end - 1);
                end else begin
                    in_valid <= 1'b0;
                end
            end
        end
    end

    // ---- S2MM: random TREADY; keeps every word, counts TLASTs and where the last one was; checks
    // that a stalled beat keeps TVALID, TDATA and TLAST, and that TKEEP/TSTRB mark whole words.
    reg [WORD-1:0] out_mem [0:NOUT-1];
    integer snk_n, tlast_n, tlast_at, tlast_cyc, irq_rise_cyc;
    reg stalled, prev_last, prev_irq;
    reg [WORD-1:0] prev_data;
    always @(posedge clk) begin
        if (!rst_n) begin
            out_ready <= 1'b0;
            snk_n <= 0; tlast_n <= 0; tlast_at <= -1; tlast_cyc <= -1; irq_rise_cyc <= -1;
            stalled <= 1'b0; prev_irq <= 1'b0;
        end else begin
            out_ready <= rng[23:16] >= STALL;
            if (stalled && (!out_valid || out_data !== prev_data || out_last !== prev_last)) begin
                $display("tb_axi_top: FAIL: out_r changed a stalled beat at cycle %0d", cyc);
                errors = errors + 1;
            end
            stalled <= out_valid && !out_ready;
            prev_data <= out_data;
            prev_last <= out_last;
            if (out_valid && out_ready) begin
                if (snk_n < NOUT) out_mem[snk_n] <= out_data;
                snk_n <= snk_n + 1;
                if (out_keep !== ALL_BYTES || out_strb !== ALL_BYTES) begin
                    $display("tb_axi_top: FAIL: TKEEP/TSTRB %h/%h on word %0d", out_keep, out_strb, snk_n);
                    errors = errors + 1;
                end
                if (out_last) begin
                    tlast_n <= tlast_n + 1;
                    tlast_at <= snk_n;
                    tlast_cyc <= cyc;
                end
            end
            prev_irq <= irq;
            if (irq && !prev_irq) irq_rise_cyc <= cyc;
        end
    end

    // ---- the sequence
    task fail(input [8*96-1:0] what, input integer got, input integer want);
        begin
            $display("tb_axi_top: FAIL: %0s: got 0x%0h, want 0x%0h", what, got, want);
            errors = errors + 1;
        end
    endtask

    task lite_write(input [4:0] a, input [31:0] d, input [3:0] s);
        integer want;
        begin
            @(negedge clk);
            cmd_wr = 1'b1; cmd_addr = a; cmd_data = d; cmd_strb = s;
            want = lite_count + 1;
            cmd_go = ~cmd_go;
            while (lite_count != want) @(negedge clk);
        end
    endtask

    task lite_read(input [4:0] a, output [31:0] d);
        integer want;
        begin
            @(negedge clk);
            cmd_wr = 1'b0; cmd_addr = a;
            want = lite_count + 1;
            cmd_go = ~cmd_go;
            while (lite_count != want) @(negedge clk);
            d = lite_rdata;
        end
    endtask

    task wait_cycles(input integer n);
        integer k;
        for (k = 0; k < n; k = k + 1) @(negedge clk);
    endtask

    // expected word j of sample s of a run whose inputs start at in_base: fake_accel.v's rule
    function [WORD-1:0] expect_word(input integer in_base, input integer s, input integer j,
                                    input integer planes);
        integer i;
        reg [WORD-1:0] acc;
        begin
            acc = {WORD{1'b0}};
            for (i = 0; i < IN_WORDS; i = i + 1) acc = acc + in_mem[in_base + s * IN_WORDS + i];
            expect_word = acc + planes * (j + 1);
        end
    endfunction

    reg [31:0] r;
    integer in_base, out_base, k, s, j, polls, runs_with_words, seed_v;

    // One run as pynq_backend._transfer does it; extra_in: words the MM2S offers beyond the run
    // (must stay unadmitted); rewrite_planes >= 0: written to the planes register mid-run.
    task run(input integer n, input integer planes_reg, input integer planes_eff, input integer extra_in,
             input integer rewrite_planes);
        begin
            in_base = src_idx;
            out_base = snk_n;
            // the MM2S holds at most the one word it already offers until the DMA is started
            src_end = in_base;
            lite_write(5'h10, planes_reg, 4'hF);
            lite_write(5'h18, n, 4'hF);
            lite_write(5'h00, 32'h1, 4'hF);
            // accepted at once (nothing else runs): ap_start cleared, busy, ap_ready seen once
            lite_read(5'h00, r);
            if (n == 0) begin
                if (r[3:0] !== 4'b1110) fail("ap_ctrl after ap_start, n_samples = 0 (ready|idle|done)", r, 4'hE);
            end else begin
                if (r[3:0] !== 4'b1000) fail("ap_ctrl after ap_start (ready, not idle, not done)", r, 4'h8);
                lite_read(5'h00, r);
                if (r[3:0] !== 4'b0000) fail("ap_ctrl read again while running (ap_ready cleared on read)", r, 0);
            end
            // the DMA's two transfers
            src_end = in_base + n * IN_WORDS + extra_in;
            if (rewrite_planes >= 0) begin
                wait_cycles(2);
                lite_write(5'h10, rewrite_planes, 4'hF);
                if (snk_n - out_base >= n * OUT_WORDS)
                    fail("planes rewrite came after the run (test too short)", snk_n - out_base, n * OUT_WORDS);
            end
            if (n != 0) begin
                while (tlast_at < out_base) @(negedge clk);
            end else begin
                wait_cycles(40);
            end
            // poll ap_done as a host would; it was set when the last word moved (with n_samples
            // = 0 the read right after ap_start saw it and cleared it)
            if (n != 0) begin
                polls = 0;
                r = 0;
                while (!r[1] && polls < 4) begin
                    lite_read(5'h00, r);
                    polls = polls + 1;
                end
                if (r[2:1] !== 2'b11) fail("ap_ctrl after the run (idle and done)", r, 6);
                if (polls != 1) fail("reads until ap_done after TLAST", polls, 1);
            end
            lite_read(5'h00, r);
            if (r[3:0] !== 4'b0100) fail("ap_ctrl read again after the run (done cleared on read)", r, 4);
            // counts: inputs admitted, outputs and TLAST
            wait_cycles(30);
            if (src_idx - in_base != n * IN_WORDS) fail("input words admitted", src_idx - in_base, n * IN_WORDS);
            if (extra_in > 0 && !in_valid) fail("MM2S still offering its surplus word", in_valid, 1);
            if (snk_n - out_base != n * OUT_WORDS) fail("output words", snk_n - out_base, n * OUT_WORDS);
            if (n != 0) begin
                runs_with_words = runs_with_words + 1;
                if (tlast_at != out_base + n * OUT_WORDS - 1)
                    fail("TLAST position", tlast_at, out_base + n * OUT_WORDS - 1);
            end
            if (tlast_n != runs_with_words) fail("TLAST count (one per run with words)", tlast_n, runs_with_words);
            for (s = 0; s < n; s = s + 1)
                for (j = 0; j < OUT_WORDS; j = j + 1)
                    if (out_mem[out_base + s * OUT_WORDS + j] !== expect_word(in_base, s, j, planes_eff)) begin
                        $display("tb_axi_top: FAIL: sample %0d word %0d: got %h, want %h (planes %0d)", s, j,
                                 out_mem[out_base + s * OUT_WORDS + j], expect_word(in_base, s, j, planes_eff),
                                 planes_eff);
                        errors = errors + 1;
                    end
        end
    endtask

    initial begin
        seed_v = SEED;
        for (k = 0; k < NIN; k = k + 1) in_mem[k] = {$random(seed_v), $random(seed_v), $random(seed_v)};
        runs_with_words = 0;
        wait_cycles(4);
        rst_n = 1'b1;
        wait_cycles(2);

        // after reset: idle, nothing pending; registers read back under WSTRB
        lite_read(5'h00, r);
        if (r !== 32'h4) fail("ap_ctrl after reset", r, 4);
        lite_write(5'h18, 32'hFFFF_FFFF, 4'hF);
        lite_write(5'h18, 32'h0000_0000, 4'b0011);
        lite_read(5'h18, r);
        if (r !== 32'hFFFF_0000) fail("n_samples after a write under WSTRB 0011", r, 32'hFFFF0000);
        lite_read(5'h14, r);
        if (r !== 32'h0) fail("reserved 0x14", r, 0);

        // run 1: planes 3 latched while the register is rewritten to 9 mid-run; the MM2S offers
        // 3 words beyond the run, which must wait
        run(6, 3, 3, 3, 9);
        lite_read(5'h10, r);
        if (r !== 32'd9) fail("planes register read back", r, 9);

        // run 2, right after: planes 9 (written during run 1), interrupts on ap_done
        lite_write(5'h04, 32'h1, 4'hF);
        lite_write(5'h08, 32'h1, 4'hF);
        run(5, 9, 9, 0, -1);
        if (irq_rise_cyc != tlast_cyc + 1) fail("interrupt rise cycle vs TLAST + 1", irq_rise_cyc, tlast_cyc + 1);
        lite_read(5'h0C, r);
        if (r !== 32'h1 || !irq) fail("ISR after run 2 (ap_done) with the interrupt line up", r, 1);
        lite_write(5'h0C, 32'h1, 4'hF);  // toggle on write clears it
        lite_read(5'h0C, r);
        if (r !== 32'h0 || irq) fail("ISR after writing 1 (toggled) with the interrupt line down", r, 0);
        lite_write(5'h04, 32'h0, 4'hF);

        // run 3: n_samples = 0 while the MM2S offers words: none read, none written, no TLAST
        run(0, 5, 5, 4, -1);

        // run 4: planes above 15 means all planes (0 to the accelerator), not its low 4 bits
        run(2, 32'h13, 0, 0, -1);

        // run 5: one sample
        run(1, 1, 1, 0, -1);

        if (errors == 0) begin
            $display("tb_axi_top: PASS WORD=%0d IN_WORDS=%0d OUT_WORDS=%0d runs=5", WORD, IN_WORDS, OUT_WORDS,
                     " words_in=%0d words_out=%0d cycles=%0d", src_idx, snk_n, cyc);
            $finish;
        end else begin
            $fatal(1, "tb_axi_top: FAIL: %0d errors", errors);
        end
    end
endmodule

`default_nettype wire
