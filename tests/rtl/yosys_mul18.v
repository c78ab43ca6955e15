`default_nettype none
// Signed 18x18 multiply with registered inputs and product: one DSP48E1.
module yosys_mul18 (
    input  wire               clk,
    input  wire signed [17:0] a,
    input  wire signed [17:0] b,
    output reg  signed [35:0] p
);
    reg signed [17:0] ra, rb;
    always @(posedge clk) begin
        ra <= a;
        rb <= b;
        p  <= ra * rb;
    end
endmodule
`default_nettype wire
