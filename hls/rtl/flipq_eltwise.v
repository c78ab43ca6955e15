// Element-wise requantization, exactly flipq.host.emulator.requantize on each of N lanes:
// ReLU if RELU; SHIFT > 0: round half to even of x / 2**SHIFT; SHIFT < 0: x * 2**-SHIFT;
// clamp to QMIN..QMAX if SAT; the result in OW bits, two's complement (wrapping when not SAT).
//
// Widths: the input is widened by one bit (XW) so an unsigned input reads as non-negative, then
// sign-extended to CW = XW + |SHIFT| + 2 bits (at least 66, so the 64-bit QMIN/QMAX compare
// without truncation). A left shift by |SHIFT| then fits, and a rounded right shift is at most
// floor + 1, so nothing overflows for any IW and SHIFT. Only the rounding adder does
// arithmetic; it works at the floor's own width (below).
//
// Rounding: with floor f = x >>> SHIFT, the dropped bits are above half when the highest dropped
// bit r is set and any lower one (the sticky bit) is set, exactly half when only r is set, where
// ties go to the even neighbour: f + (r & (sticky | f[0])). Bits below the input's width are
// the sign-extension, so shifts wider than IW still round correctly.
//
// One register stage; in_ready = !out_valid || out_ready keeps one beat a cycle.
`default_nettype none

module flipq_eltwise #(
    parameter integer N = 1,
    parameter integer IW = 8,
    parameter integer I_SIGNED = 1,
    parameter integer OW = 8,
    parameter integer RELU = 0,
    parameter integer SHIFT = 0,
    parameter integer SAT = 1,
    parameter signed [63:0] QMIN = -128,
    parameter signed [63:0] QMAX = 127
) (
    input  wire             clk,
    input  wire             rst,
    input  wire [N*IW-1:0]  in_data,
    input  wire             in_valid,
    output wire             in_ready,
    output reg  [N*OW-1:0]  out_data,
    output reg              out_valid,
    input  wire             out_ready
);
    localparam integer XW = IW + 1;
    localparam integer AS = (SHIFT < 0) ? -SHIFT : SHIFT;
    localparam integer CW = (XW + AS + 2 > 66) ? XW + AS + 2 : 66;

    wire signed [CW-1:0] lo = QMIN;
    wire signed [CW-1:0] hi = QMAX;
    wire [N*OW-1:0] res;

    genvar e;
    generate
        for (e = 0; e < N; e = e + 1) begin : g_lane
            wire [IW-1:0] raw = in_data[e*IW +: IW];
            wire signed [XW-1:0] x = {(I_SIGNED != 0) ? raw[IW-1] : 1'b0, raw};
            wire signed [XW-1:0] r = (RELU != 0 && x[XW-1]) ? {XW{1'b0}} : x;
            wire signed [CW-1:0] xe = r;
            wire signed [CW-1:0] y;
            if (SHIFT > 0) begin : g_down
                // The floor needs XW - SHIFT bits (one, the sign, when the shift is wider) and
                // rounding up one more; adding at that width rather than CW keeps the carry
                // chain and the clamp comparators as narrow as the data (Yosys cannot see
                // that the top bits of a wide sum are copies of its sign).
                localparam integer FW = ((XW > SHIFT) ? XW - SHIFT : 1) + 1;
                wire signed [FW-1:0] fl = xe >>> SHIFT;
                wire half_bit = xe[SHIFT-1];
                wire sticky;
                if (SHIFT >= 2) begin : g_sticky
                    assign sticky = |xe[SHIFT-2:0];
                end else begin : g_nosticky
                    assign sticky = 1'b0;
                end
                wire signed [FW-1:0] rounded = fl + {{(FW - 1){1'b0}}, half_bit & (sticky | fl[0])};
                assign y = rounded;
            end else if (SHIFT < 0) begin : g_up
                assign y = xe <<< AS;
            end else begin : g_same
                assign y = xe;
            end
            wire signed [CW-1:0] q;
            if (SAT != 0) begin : g_sat
                assign q = (y < lo) ? lo : (y > hi) ? hi : y;
            end else begin : g_wrap
                assign q = y;
            end
            assign res[e*OW +: OW] = q[OW-1:0];
        end
    endgenerate

    assign in_ready = !out_valid || out_ready;

    always @(posedge clk) begin
        if (in_valid && in_ready) out_data <= res;
    end

    always @(posedge clk) begin
        if (rst) out_valid <= 1'b0;
        else if (in_valid && in_ready) out_valid <= 1'b1;
        else if (out_ready) out_valid <= 1'b0;
    end
endmodule

`default_nettype wire
