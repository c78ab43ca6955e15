`default_nettype none
// 16-bit registered adder: the sum must map onto a CARRY4 chain (4 bits a CARRY4).
module yosys_add16 #(parameter W = 16) (
    input  wire         clk,
    input  wire [W-1:0] a,
    input  wire [W-1:0] b,
    output reg  [W-1:0] s
);
    reg [W-1:0] ra, rb;
    always @(posedge clk) begin
        ra <= a;
        rb <= b;
        s  <= ra + rb;
    end
endmodule
`default_nettype wire
