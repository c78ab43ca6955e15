`default_nettype none
// DEPTH x W simple dual-port RAM, synchronous write and asynchronous read: distributed RAM
// (32 x 6 is one RAM32M: three 2-bit read ports beside the write port).
module yosys_ram #(parameter integer W = 6, parameter integer DEPTH = 32, parameter integer AW = 5) (
    input  wire          clk,
    input  wire          we,
    input  wire [AW-1:0] waddr,
    input  wire [W-1:0]  wdata,
    input  wire [AW-1:0] raddr,
    output wire [W-1:0]  rdata
);
    reg [W-1:0] mem [0:DEPTH-1];
    always @(posedge clk) if (we) mem[waddr] <= wdata;
    assign rdata = mem[raddr];
endmodule
`default_nettype wire
