// Test sink: takes NBEATS beats from a ready/valid stream, dropping ready on a random cycle with
// probability STALL/256, and writes each beat in hex to FILE, then a last line
// "# <src first> <src last> <sink first> <sink last>" (cycles from reset) for throughput checks.
`default_nettype none

module tb_stream_sink #(
    parameter integer W = 8,
    parameter integer NBEATS = 1,
    parameter FILE = "out.txt",
    parameter [31:0] SEED = 32'h8765_4321,
    parameter integer STALL = 0
) (
    input  wire         clk,
    input  wire         rst,
    input  wire [W-1:0] data,
    input  wire         valid,
    output reg          ready,
    input  wire [31:0]  src_first,
    input  wire [31:0]  src_last,
    output reg          done
);
    integer fd, n;
    reg [31:0] rng, cyc, first, last;
    wire [31:0] r1 = rng ^ (rng << 13);
    wire [31:0] r2 = r1 ^ (r1 >> 17);
    wire [31:0] r3 = r2 ^ (r2 << 5);

    initial fd = $fopen(FILE, "w");

    always @(posedge clk) begin
        if (rst) begin
            n <= 0;
            ready <= 1'b0;
            done <= 1'b0;
            rng <= SEED;
            cyc <= 0;
            first <= 0;
            last <= 0;
        end else begin
            cyc <= cyc + 1;
            rng <= r3;
            ready <= (r3[7:0] >= STALL);
            if (valid && ready && n < NBEATS) begin
                $fwrite(fd, "%h\n", data);
                if (n == 0) first <= cyc;
                n <= n + 1;
                if (n + 1 == NBEATS) last <= cyc;
            end
            // One cycle after the last beat, so that a source feeding the sink through wires
            // has recorded its own last beat too.
            if (n == NBEATS && !done) begin
                $fwrite(fd, "# %0d %0d %0d %0d\n", src_first, src_last, first, last);
                $fclose(fd);
                done <= 1'b1;
            end
        end
    end
endmodule

`default_nettype wire
