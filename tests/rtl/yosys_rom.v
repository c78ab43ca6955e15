`default_nettype none
// Synchronous-read ROM whose contents come from a hex file named by a string parameter, as
// flipq's MVAU ROMs do: DEPTH x W.
module yosys_rom #(
    parameter integer W = 8,
    parameter integer DEPTH = 64,
    parameter integer AW = 6,
    parameter FILE = "rom.hex"
) (
    input  wire          clk,
    input  wire [AW-1:0] addr,
    output reg  [W-1:0]  q
);
    reg [W-1:0] mem [0:DEPTH-1];
    initial $readmemh(FILE, mem);
    always @(posedge clk) q <= mem[addr];
endmodule
`default_nettype wire
