// tb_mvau: one flipq_mvau under random input gaps and output stalls (tests/test_rtl_mvau.py).
//
// Phases run one after another; phase i's config word PH_FILE[i] is planes[3:0], random input
// gaps (bit 4), random output stalls (bit 5). A phase feeds NVEC vectors (R rows each, from
// IN_FILE in order) and ends when their NVEC*NB beats are out, so `planes` changes only while the
// unit is idle. Every beat is written as "phase cycle data" to OUT_FILE; `done` rises at the end.
`default_nettype none

module tb_mvau #(
    parameter integer SIMD = 4, parameter integer PE = 1, parameter integer R = 1,
    parameter integer NB = 1, parameter integer B = 2, parameter integer T0 = 1,
    parameter integer AW = 4, parameter integer A_SIGNED = 0, parameter integer PSUM_W = 8,
    parameter integer ACC_W = 16, parameter integer OUT_W = 16, parameter integer FULL_PLANES = 0, parameter integer DW = 0,
    parameter integer MODE = 0, parameter integer RQ_RELU = 0, parameter integer RQ_SHIFT = 0,
    parameter integer RQ_MIN = 0, parameter integer RQ_MAX = 0, parameter integer NTHR = 1,
    parameter integer THR_W = 17,
    parameter W_FILE = "", parameter S_FILE = "", parameter BLK_FILE = "", parameter BIAS_FILE = "",
    parameter THR_FILE = "", parameter DESC_FILE = "",
    parameter integer NPH = 1, parameter integer NVEC = 1, parameter integer SEED = 1,
    parameter IN_FILE = "", parameter PH_FILE = "", parameter OUT_FILE = ""
) (
    input  wire clk,
    input  wire rst,
    output reg  done
);
    localparam integer NROW = NPH * NVEC * R;
    reg [SIMD*AW-1:0] rows [0:NROW-1];
    reg [7:0]         ph   [0:NPH-1];
    integer fd;
    initial begin
        $readmemh(IN_FILE, rows);
        $readmemh(PH_FILE, ph);
        fd = $fopen(OUT_FILE, "w");
    end

    reg  [SIMD*AW-1:0] in_data;
    reg                in_valid, out_ready;
    wire               in_ready, out_valid;
    wire [PE*OUT_W-1:0] out_data;
    reg  [3:0]         planes;

    flipq_mvau #(
        .SIMD(SIMD), .PE(PE), .R(R), .NB(NB), .B(B), .T0(T0), .AW(AW), .A_SIGNED(A_SIGNED),
        .PSUM_W(PSUM_W), .ACC_W(ACC_W), .OUT_W(OUT_W), .FULL_PLANES(FULL_PLANES), .DW(DW), .MODE(MODE),
        .RQ_RELU(RQ_RELU), .RQ_SHIFT(RQ_SHIFT), .RQ_MIN(RQ_MIN), .RQ_MAX(RQ_MAX), .NTHR(NTHR),
        .THR_W(THR_W), .W_FILE(W_FILE), .S_FILE(S_FILE), .BLK_FILE(BLK_FILE), .BIAS_FILE(BIAS_FILE),
        .THR_FILE(THR_FILE), .DESC_FILE(DESC_FILE)
    ) dut (
        .clk(clk), .rst(rst), .planes(planes), .in_data(in_data), .in_valid(in_valid),
        .in_ready(in_ready), .out_data(out_data), .out_valid(out_valid), .out_ready(out_ready)
    );

    integer phase, sent, got, ridx, cyc;
    reg [31:0] x;                       // xorshift32
    reg [31:0] xn;
    reg        gaps, stalls;
    integer    sent_n, got_n, ridx_n;

    always @(posedge clk) begin
        if (rst) begin
            phase <= 0; sent <= 0; got <= 0; ridx <= 0; cyc <= 0;
            x <= SEED; in_valid <= 1'b0; out_ready <= 1'b0; done <= 1'b0;
            in_data <= {SIMD*AW{1'b0}};
            planes <= ph[0][3:0];
        end else if (!done) begin
            cyc <= cyc + 1;
            xn = x ^ (x << 13);
            xn = xn ^ (xn >> 17);
            xn = xn ^ (xn << 5);
            x <= xn;
            gaps = ph[phase][4];
            stalls = ph[phase][5];
            sent_n = sent; ridx_n = ridx; got_n = got;
            if (in_valid && in_ready) begin
                sent_n = sent + 1;
                ridx_n = ridx + 1;
            end
            // a beat offered stays offered until it moves (AXI-Stream)
            if (!in_valid || in_ready) begin
                if (sent_n < NVEC * R && !(gaps && xn[2:0] < 3'd3)) begin
                    in_valid <= 1'b1;
                    in_data <= rows[ridx_n];
                end else begin
                    in_valid <= 1'b0;
                end
            end
            if (out_valid && out_ready) begin
                $fwrite(fd, "%0d %0d %h\n", phase, cyc, out_data);
                got_n = got + 1;
            end
            out_ready <= !(stalls && xn[5:3] < 3'd3);
            sent <= sent_n; ridx <= ridx_n; got <= got_n;
            if (got_n == NVEC * NB) begin
                sent <= 0; got <= 0;
                in_valid <= 1'b0;
                if (phase + 1 == NPH) begin
                    done <= 1'b1;
                    $fclose(fd);
                end else begin
                    phase <= phase + 1;
                    planes <= ph[phase + 1][3:0];
                end
            end
        end
    end
endmodule

`default_nettype wire
