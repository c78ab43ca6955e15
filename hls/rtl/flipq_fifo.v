// First-in first-out buffer between streaming stages.
//
// The memory is read synchronously into an output register (first-word fall-through): a
// synchronous read port with an enable is what both Xilinx BRAM and LUTRAM offer, so Yosys
// can map a deep FIFO onto RAMB18/RAMB36 and a shallow one onto RAM32M/RAM64M or flip-flops.
// The memory holds DEPTH beats and the output register one more.
//
// A beat written at cycle t can be read from the memory at t+1 (two-cycle latency); after that
// one beat goes in and one comes out every cycle. The memory is never read at the address being
// written (a read needs a stored beat, a write a free slot, so the two pointers differ), so the
// port's read-during-write behaviour never matters and no bypass logic is needed.
//
// in_ready depends on the fill count only, never combinationally on out_ready, so a FIFO breaks
// the ready chain between stages.
`default_nettype none

module flipq_fifo #(
    parameter integer W = 8,
    parameter integer DEPTH = 2
) (
    input  wire         clk,
    input  wire         rst,
    input  wire [W-1:0] in_data,
    input  wire         in_valid,
    output wire         in_ready,
    output reg  [W-1:0] out_data,
    output reg          out_valid,
    input  wire         out_ready
);
    function integer clog2;
        input integer v;
        integer r;
        begin
            r = 0;
            while ((1 << r) < v) r = r + 1;
            clog2 = (r < 1) ? 1 : r;
        end
    endfunction

    localparam integer AW = clog2(DEPTH);
    localparam integer CW = clog2(DEPTH + 1);

    reg [W-1:0] mem [0:DEPTH-1];
    reg [AW-1:0] wr_ptr, rd_ptr;
    reg [CW-1:0] count;   // beats in the memory, not counting the output register

    wire wr = in_valid && in_ready;
    // Refill the output register when it is empty or being emptied this cycle.
    wire rd = (count != 0) && (!out_valid || out_ready);

    assign in_ready = (count != DEPTH);

    always @(posedge clk) begin
        if (wr) mem[wr_ptr] <= in_data;
        if (rd) out_data <= mem[rd_ptr];
    end

    always @(posedge clk) begin
        if (rst) begin
            wr_ptr <= 0;
            rd_ptr <= 0;
            count <= 0;
            out_valid <= 1'b0;
        end else begin
            if (wr) wr_ptr <= (wr_ptr == DEPTH - 1) ? {AW{1'b0}} : wr_ptr + 1'b1;
            if (rd) rd_ptr <= (rd_ptr == DEPTH - 1) ? {AW{1'b0}} : rd_ptr + 1'b1;
            if (wr && !rd) count <= count + 1'b1;
            else if (rd && !wr) count <= count - 1'b1;
            if (rd) out_valid <= 1'b1;
            else if (out_ready) out_valid <= 1'b0;
        end
    end
endmodule

`default_nettype wire
