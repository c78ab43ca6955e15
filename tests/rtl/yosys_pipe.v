`default_nettype none
// W-bit register pipeline of STAGES stages: exactly W*STAGES flip-flops
// with RESET=1 (the reset keeps Yosys from packing the stages into SRLs); with RESET=0 each bit's
// stages become one SRL16E.
module yosys_pipe #(parameter integer W = 8, parameter integer STAGES = 3, parameter integer RESET = 1) (
    input  wire         clk,
    input  wire         rst,
    input  wire [W-1:0] d,
    output wire [W-1:0] q
);
    reg [W-1:0] r [0:STAGES-1];
    integer i;
    always @(posedge clk) begin
        if (RESET != 0 && rst) begin
            for (i = 0; i < STAGES; i = i + 1) r[i] <= {W{1'b0}};
        end else begin
            r[0] <= d;
            for (i = 1; i < STAGES; i = i + 1) r[i] <= r[i-1];
        end
    end
    assign q = r[STAGES-1];
endmodule
`default_nettype wire
