// A residual add, exactly flipq.host.emulator's: per lane (a << SA) + (b << SB), the two
// operands moved onto the finer of their power-of-two grids by a left shift, in OW bits two's
// complement (the plan sizes OW from the operands' ranges: it never overflows). A beat leaves
// when both operands have one (a join); one register stage, one beat a cycle.
`default_nettype none

module flipq_add #(
    parameter integer N = 1,
    parameter integer AW = 8,
    parameter integer A_SIGNED = 1,
    parameter integer SA = 0,
    parameter integer BW = 8,
    parameter integer B_SIGNED = 1,
    parameter integer SB = 0,
    parameter integer OW = 10
) (
    input  wire             clk,
    input  wire             rst,
    input  wire [N*AW-1:0]  a_data,
    input  wire             a_valid,
    output wire             a_ready,
    input  wire [N*BW-1:0]  b_data,
    input  wire             b_valid,
    output wire             b_ready,
    output reg  [N*OW-1:0]  out_data,
    output reg              out_valid,
    input  wire             out_ready
);
    wire take = a_valid && b_valid && (!out_valid || out_ready);
    assign a_ready = take;
    assign b_ready = take;
    wire [N*OW-1:0] sum;

    genvar e;
    generate
        for (e = 0; e < N; e = e + 1) begin : g_lane
            wire [AW-1:0] ra = a_data[e*AW +: AW];
            wire [BW-1:0] rb = b_data[e*BW +: BW];
            // widened by one bit so an unsigned operand reads as non-negative, then to OW
            wire signed [AW:0] xa = {(A_SIGNED != 0) ? ra[AW-1] : 1'b0, ra};
            wire signed [BW:0] xb = {(B_SIGNED != 0) ? rb[BW-1] : 1'b0, rb};
            wire signed [OW-1:0] ea = xa;
            wire signed [OW-1:0] eb = xb;
            assign sum[e*OW +: OW] = (ea <<< SA) + (eb <<< SB);
        end
    endgenerate

    always @(posedge clk) begin
        if (take) out_data <= sum;
    end

    always @(posedge clk) begin
        if (rst) out_valid <= 1'b0;
        else if (take) out_valid <= 1'b1;
        else if (out_ready) out_valid <= 1'b0;
    end
endmodule

`default_nettype wire
