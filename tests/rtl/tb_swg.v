`default_nettype none
// One flipq_swg (POOL=1: followed by flipq_poolmax over each window, i.e. max pooling) fed
// from IN_FILE with random input gaps and drained with random output stalls, both from a
// seeded LFSR; every output beat goes to OUT_FILE as "<phase> <hex data> <cycle>". The generated top
// (tests/test_rtl_swg.py) instantiates several of these, one per geometry, on one clock.
module tb_swg #(
    parameter integer AW = 4,
    parameter integer CIN = 4,
    parameter integer IN_H = 8,
    parameter integer IN_W = 8,
    parameter integer KH = 3,
    parameter integer KW = 3,
    parameter integer SY = 1,
    parameter integer SX = 1,
    parameter integer PAD_T = 0,
    parameter integer PAD_L = 0,
    parameter integer PAD_B = 0,
    parameter integer PAD_R = 0,
    parameter integer OUT_H = (IN_H + PAD_T + PAD_B - KH) / SY + 1,
    parameter integer OUT_W = (IN_W + PAD_L + PAD_R - KW) / SX + 1,
    parameter integer SIMD = CIN,
    parameter integer POOL = 0,
    parameter integer A_SIGNED = 0,
    parameter integer NPIX = 1,          // input beats in IN_FILE (all frames)
    parameter integer NOUT = 1,          // output beats expected
    parameter integer SEED = 1,
    parameter integer IN_GAP = 0,        // P(no input offered in a cycle) = IN_GAP/16
    parameter integer OUT_STALL = 0,     // P(output not ready in a cycle) = OUT_STALL/16
    parameter IN_FILE = "in.hex",
    parameter OUT_FILE = "out.txt"
) (
    input  wire clk,
    input  wire rst,
    output reg  done
);
    localparam integer OW = SIMD * AW;
    reg [CIN*AW-1:0] pix [0:NPIX-1];
    integer fd;
    initial begin
        $readmemh(IN_FILE, pix);
        fd = $fopen(OUT_FILE, "w");
    end

    // Phase 0 runs with the random gaps and stalls, phase 1 (after a reset of the DUT) without
    // any, so every geometry is both checked under back-pressure and timed at full rate.
    reg phase;
    reg lrst;
    reg [31:0] lfsr;
    reg [31:0] cyc;
    reg [31:0] idx;
    reg [31:0] nout;
    reg in_valid;
    reg out_ready;
    wire in_ready;
    wire [OW-1:0] out_data;
    wire out_valid;
    wire [31:0] idx_nx = idx + ((in_valid && in_ready) ? 1 : 0);

    always @(posedge clk) begin
        if (rst) begin
            lfsr <= SEED;
            cyc <= 0;
            idx <= 0;
            nout <= 0;
            in_valid <= 1'b0;
            out_ready <= 1'b0;
            done <= 1'b0;
            phase <= 1'b0;
            lrst <= 1'b0;
        end else if (lrst) begin
            lrst <= 1'b0;
            idx <= 0;
            nout <= 0;
            in_valid <= 1'b0;
            cyc <= cyc + 1;
        end else begin
            lfsr <= {lfsr[30:0], 1'b0} ^ (lfsr[31] ? 32'h04C11DB7 : 32'h0);
            cyc <= cyc + 1;
            idx <= idx_nx;
            // a valid beat stays offered until taken (AXI-Stream)
            if (!in_valid || in_ready)
                in_valid <= (idx_nx < NPIX) && (phase || lfsr[3:0] >= IN_GAP);
            out_ready <= phase || (lfsr[11:8] >= OUT_STALL);
            if (out_valid && out_ready) begin
                $fwrite(fd, "%0d %h %0d\n", phase, out_data, cyc);
                nout <= nout + 1;
                if (nout + 1 == NOUT) begin
                    if (phase) begin
                        done <= 1'b1;
                        $fclose(fd);
                    end else begin
                        phase <= 1'b1;
                        lrst <= 1'b1;
                    end
                end
            end
        end
    end

    wire [SIMD*AW-1:0] w_data;
    wire w_valid, w_ready;
    flipq_swg #(.AW(AW), .CIN(CIN), .IN_H(IN_H), .IN_W(IN_W), .KH(KH), .KW(KW), .SY(SY), .SX(SX),
                .PAD_T(PAD_T), .PAD_L(PAD_L), .PAD_B(PAD_B), .PAD_R(PAD_R), .OUT_H(OUT_H),
                .OUT_W(OUT_W), .SIMD(SIMD))
        swg (.clk(clk), .rst(rst || lrst), .in_data(pix[idx]), .in_valid(in_valid), .in_ready(in_ready),
             .out_data(w_data), .out_valid(w_valid), .out_ready(w_ready));
    generate
        if (POOL != 0) begin : pool
            flipq_poolmax #(.N(CIN), .AW(AW), .A_SIGNED(A_SIGNED), .KK(KH * KW))
                pm (.clk(clk), .rst(rst || lrst), .in_data(w_data), .in_valid(w_valid), .in_ready(w_ready),
                    .out_data(out_data), .out_valid(out_valid), .out_ready(out_ready));
        end else begin : direct
            assign out_data = w_data;
            assign out_valid = w_valid;
            assign w_ready = out_ready;
        end
    endgenerate
endmodule
`default_nettype wire
