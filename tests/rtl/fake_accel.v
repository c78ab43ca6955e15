// Stand-in for the generated flipq_accel (same ports), for testing the board wrapper on its own:
// per sample it takes IN_WORDS words, waits LAT cycles and gives OUT_WORDS words, word j being
// (sum of the sample's input words) + planes * (j + 1), modulo 2**WORD. planes is read while the
// words go out, so a value that changed during a run would show. Input and output counts that
// differ make a wrapper that counts the wrong side fail. Like the real pipeline it keeps taking
// input (two samples ahead) while it gives output, so a wrapper that let a surplus word through
// at the end of a run would be caught. Sizes come from defines because the
// wrapper instantiates flipq_accel without parameters, as the generated one has none.
`default_nettype none
`ifndef FAKE_WORD
`define FAKE_WORD 32
`endif
`ifndef FAKE_IN_WORDS
`define FAKE_IN_WORDS 1
`endif
`ifndef FAKE_OUT_WORDS
`define FAKE_OUT_WORDS 1
`endif

module flipq_accel (
    input  wire                  clk,
    input  wire                  rst,
    input  wire [3:0]            planes,
    input  wire [`FAKE_WORD-1:0] s_data,
    input  wire                  s_valid,
    output wire                  s_ready,
    output wire [`FAKE_WORD-1:0] m_data,
    output wire                  m_valid,
    input  wire                  m_ready
);
    localparam integer WORD = `FAKE_WORD;
    localparam integer LAT = 3;

    // take side: the running sum of the sample coming in; finished sums queue up (two places)
    reg [WORD-1:0] acc, q0, q1, cur;
    reg [1:0] count;
    reg [31:0] n_in, n_out, wait_left;
    reg giving, busy;
    wire take = s_valid && s_ready;
    wire push = take && n_in == `FAKE_IN_WORDS - 1;
    wire pop = !busy && count != 2'd0;

    assign s_ready = count < 2'd2;
    assign m_valid = giving;
    assign m_data = cur + planes * (n_out + 1);

    always @(posedge clk) begin
        if (rst) begin
            acc <= {WORD{1'b0}};
            n_in <= 0; n_out <= 0; wait_left <= 0;
            count <= 2'd0;
            giving <= 1'b0; busy <= 1'b0;
        end else begin
            if (take) begin
                acc <= push ? {WORD{1'b0}} : acc + s_data;
                n_in <= push ? 0 : n_in + 1;
            end
            // queue: q0 is the head
            if (push && pop) begin
                if (count == 2'd1) q0 <= acc + s_data;
                else begin q0 <= q1; q1 <= acc + s_data; end
            end else if (push) begin
                if (count == 2'd0) q0 <= acc + s_data;
                else q1 <= acc + s_data;
                count <= count + 2'd1;
            end else if (pop) begin
                q0 <= q1;
                count <= count - 2'd1;
            end
            // give side: LAT cycles after taking a sum, its OUT_WORDS words
            if (pop) begin
                cur <= q0;
                busy <= 1'b1;
                wait_left <= LAT;
            end else if (busy && !giving) begin
                if (wait_left <= 1) giving <= 1'b1;
                wait_left <= wait_left - 1;
            end else if (giving && m_ready) begin
                if (n_out == `FAKE_OUT_WORDS - 1) begin
                    n_out <= 0;
                    giving <= 1'b0;
                    busy <= 1'b0;
                end else begin
                    n_out <= n_out + 1;
                end
            end
        end
    end
endmodule

`default_nettype wire
