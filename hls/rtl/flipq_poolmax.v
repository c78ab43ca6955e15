`default_nettype none
// Per lane the maximum of KK consecutive beats: behind a flipq_swg with SIMD = CIN the KK =
// KH*KW rows of one window arrive back to back, so this is max pooling. Full throughput: a
// beat that does not close a window never waits on the output.
module flipq_poolmax #(
    parameter integer N = 4,
    parameter integer AW = 4,
    parameter integer A_SIGNED = 0,
    parameter integer KK = 4
) (
    input  wire              clk,
    input  wire              rst,
    input  wire [N*AW-1:0]   in_data,
    input  wire              in_valid,
    output wire              in_ready,
    output reg  [N*AW-1:0]   out_data,
    output reg               out_valid,
    input  wire              out_ready
);
    localparam integer KB = (KK > 1) ? $clog2(KK) : 1;
    // Flipping the sign bit maps two's complement order onto unsigned order, so one unsigned
    // comparator serves both.
    localparam [AW-1:0] FLIP = (A_SIGNED != 0) ? ({{(AW-1){1'b0}}, 1'b1} << (AW - 1)) : {AW{1'b0}};

    reg [KB-1:0] cnt;
    reg [N*AW-1:0] acc;
    wire first = (cnt == 0);
    wire last = (cnt == KK - 1);
    assign in_ready = !last || !out_valid || out_ready;
    wire take = in_valid && in_ready;

    // running maximum including the incoming beat
    reg [N*AW-1:0] mx;
    integer i;
    always @* begin
        for (i = 0; i < N; i = i + 1) begin
            if (first || ((in_data[i*AW +: AW] ^ FLIP) > (acc[i*AW +: AW] ^ FLIP)))
                mx[i*AW +: AW] = in_data[i*AW +: AW];
            else
                mx[i*AW +: AW] = acc[i*AW +: AW];
        end
    end

    always @(posedge clk) begin
        if (rst) begin
            cnt <= 0;
            out_valid <= 1'b0;
        end else begin
            if (out_valid && out_ready)
                out_valid <= 1'b0;
            if (take) begin
                cnt <= last ? 0 : cnt + 1'b1;
                if (last)
                    out_valid <= 1'b1;
            end
        end
        if (take) begin
            acc <= mx;
            if (last)
                out_data <= mx;
        end
    end
endmodule
`default_nettype wire
