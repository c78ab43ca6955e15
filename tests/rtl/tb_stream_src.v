// Test source: plays NBEATS beats from a hex file onto a ready/valid stream, idling a random
// cycle before offering a beat with probability GAP/256 (a seeded xorshift, so runs repeat).
// Holds data and valid until the beat moves, as the stream rules require. first/last: the
// cycles (counted from reset) at which the first and the last beat moved.
`default_nettype none

module tb_stream_src #(
    parameter integer W = 8,
    parameter integer NBEATS = 1,
    parameter FILE = "in.hex",
    parameter [31:0] SEED = 32'h1234_5678,
    parameter integer GAP = 0
) (
    input  wire         clk,
    input  wire         rst,
    output reg  [W-1:0] data,
    output reg          valid,
    input  wire         ready,
    output reg  [31:0]  first,
    output reg  [31:0]  last
);
    reg [W-1:0] mem [0:NBEATS-1];
    initial $readmemh(FILE, mem);

    reg [31:0] rng, cyc;
    reg [31:0] idx;
    wire moved = valid && ready;
    wire [31:0] nxt = idx + moved;   // beats moved after this edge
    wire [31:0] r1 = rng ^ (rng << 13);
    wire [31:0] r2 = r1 ^ (r1 >> 17);
    wire [31:0] r3 = r2 ^ (r2 << 5);

    always @(posedge clk) begin
        if (rst) begin
            idx <= 0;
            valid <= 1'b0;
            rng <= SEED;
            cyc <= 0;
            first <= 0;
            last <= 0;
        end else begin
            cyc <= cyc + 1;
            rng <= r3;
            if (moved) begin
                if (idx == 0) first <= cyc;
                last <= cyc;
            end
            idx <= nxt;
            if (!valid || ready) begin
                if (nxt < NBEATS && r3[7:0] >= GAP) begin
                    valid <= 1'b1;
                    data <= mem[nxt];
                end else begin
                    valid <= 1'b0;
                end
            end
        end
    end
endmodule

`default_nettype wire
