// A concatenation on the channels, exactly flipq.host.emulator's: one pixel of each operand a
// beat (NA lanes of a, then NB lanes of b, channels in that order), each value moved onto the
// finer of the operands' power-of-two grids (a << SA, b << SB) and extended to OW bits (the
// output is signed when either operand is). A join: a beat leaves when both operands have one;
// one register stage, one beat a cycle.
`default_nettype none

module flipq_concat #(
    parameter integer N = 2,
    parameter integer OW = 8,
    parameter integer NA = 1,
    parameter integer AW = 8,
    parameter integer A_SIGNED = 1,
    parameter integer SA = 0,
    parameter integer NB = 1,
    parameter integer BW = 8,
    parameter integer B_SIGNED = 1,
    parameter integer SB = 0
) (
    input  wire              clk,
    input  wire              rst,
    input  wire [NA*AW-1:0]  a_data,
    input  wire              a_valid,
    output wire              a_ready,
    input  wire [NB*BW-1:0]  b_data,
    input  wire              b_valid,
    output wire              b_ready,
    output reg  [N*OW-1:0]   out_data,
    output reg               out_valid,
    input  wire              out_ready
);
    wire take = a_valid && b_valid && (!out_valid || out_ready);
    assign a_ready = take;
    assign b_ready = take;
    wire [N*OW-1:0] joined;

    genvar e;
    generate
        for (e = 0; e < NA; e = e + 1) begin : g_a
            wire [AW-1:0] r = a_data[e*AW +: AW];
            wire signed [AW:0] x = {(A_SIGNED != 0) ? r[AW-1] : 1'b0, r};
            wire signed [OW:0] w = x;  // one bit above OW: an unsigned value's top bit survives the cut
            wire signed [OW:0] s = w <<< SA;
            assign joined[e*OW +: OW] = s[OW-1:0];
        end
        for (e = 0; e < NB; e = e + 1) begin : g_b
            wire [BW-1:0] r = b_data[e*BW +: BW];
            wire signed [BW:0] x = {(B_SIGNED != 0) ? r[BW-1] : 1'b0, r};
            wire signed [OW:0] w = x;
            wire signed [OW:0] s = w <<< SB;
            assign joined[(NA + e)*OW +: OW] = s[OW-1:0];
        end
    endgenerate

    always @(posedge clk) begin
        if (take) out_data <= joined;
    end

    always @(posedge clk) begin
        if (rst) out_valid <= 1'b0;
        else if (take) out_valid <= 1'b1;
        else if (out_ready) out_valid <= 1'b0;
    end
endmodule

`default_nettype wire
