`default_nettype none
// flipq_poolmax alone: random beats from IN_FILE with random input gaps and output stalls
// (seeded LFSR), every output beat to OUT_FILE as "<phase> <hex data> <cycle>".
module tb_pool #(
    parameter integer N = 4,
    parameter integer AW = 4,
    parameter integer A_SIGNED = 0,
    parameter integer KK = 4,
    parameter integer NIN = 1,
    parameter integer SEED = 1,
    parameter integer IN_GAP = 0,
    parameter integer OUT_STALL = 0,
    parameter IN_FILE = "in.hex",
    parameter OUT_FILE = "out.txt"
) (
    input  wire clk,
    input  wire rst,
    output reg  done
);
    localparam integer NOUT = NIN / KK;
    reg [N*AW-1:0] beats [0:NIN-1];
    integer fd;
    initial begin
        $readmemh(IN_FILE, beats);
        fd = $fopen(OUT_FILE, "w");
    end

    // Phase 0 runs with the random gaps and stalls, phase 1 (after a reset of the DUT) without
    // any, so every geometry is both checked under back-pressure and timed at full rate.
    reg phase;
    reg lrst;
    reg [31:0] lfsr;
    reg [31:0] cyc;
    reg [31:0] idx;
    reg [31:0] nout;
    reg in_valid;
    reg out_ready;
    wire in_ready;
    wire [N*AW-1:0] out_data;
    wire out_valid;
    wire [31:0] idx_nx = idx + ((in_valid && in_ready) ? 1 : 0);

    always @(posedge clk) begin
        if (rst) begin
            lfsr <= SEED;
            cyc <= 0;
            idx <= 0;
            nout <= 0;
            in_valid <= 1'b0;
            out_ready <= 1'b0;
            done <= 1'b0;
            phase <= 1'b0;
            lrst <= 1'b0;
        end else if (lrst) begin
            lrst <= 1'b0;
            idx <= 0;
            nout <= 0;
            in_valid <= 1'b0;
            cyc <= cyc + 1;
        end else begin
            lfsr <= {lfsr[30:0], 1'b0} ^ (lfsr[31] ? 32'h04C11DB7 : 32'h0);
            cyc <= cyc + 1;
            idx <= idx_nx;
            if (!in_valid || in_ready)
                in_valid <= (idx_nx < NIN) && (phase || lfsr[3:0] >= IN_GAP);
            out_ready <= phase || (lfsr[11:8] >= OUT_STALL);
            if (out_valid && out_ready) begin
                $fwrite(fd, "%0d %h %0d\n", phase, out_data, cyc);
                nout <= nout + 1;
                if (nout + 1 == NOUT) begin
                    if (phase) begin
                        done <= 1'b1;
                        $fclose(fd);
                    end else begin
                        phase <= 1'b1;
                        lrst <= 1'b1;
                    end
                end
            end
        end
    end

    flipq_poolmax #(.N(N), .AW(AW), .A_SIGNED(A_SIGNED), .KK(KK))
        dut (.clk(clk), .rst(rst || lrst), .in_data(beats[idx]), .in_valid(in_valid), .in_ready(in_ready),
             .out_data(out_data), .out_valid(out_valid), .out_ready(out_ready));
endmodule
`default_nettype wire
